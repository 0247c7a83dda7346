//! Reading values and documents with bounded concurrency over keep-alive.

use metafuse_http::{HttpClient, HttpError};
use metafuse_source::{FetchedValues, SourceError};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::task::JoinSet;

/// Everything but unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// `{api}/meta/{hash}`.
pub(crate) fn document_url(api_url: &str, hash_id: &str) -> String {
    format!("{api_url}/meta/{}", encode(hash_id))
}

/// `{api}/meta/{hash}/{each/segment/of/the/property}`.
pub(crate) fn value_url(api_url: &str, hash_id: &str, property: &str) -> String {
    let segments: Vec<String> = property.split('/').map(encode).collect();
    format!("{}/{}", document_url(api_url, hash_id), segments.join("/"))
}

pub(crate) fn source_error(error: HttpError) -> SourceError {
    match error {
        HttpError::InvalidUrl { .. } => SourceError::InvalidLocation {
            message: format!("meta-core: {error}"),
        },
        HttpError::Unreachable { .. } | HttpError::TimedOut { .. } => SourceError::Connection {
            message: format!("meta-core: {error}"),
        },
        HttpError::Status { status, .. } if status >= 500 => SourceError::Connection {
            message: format!("meta-core: {error}"),
        },
        HttpError::Status { .. } | HttpError::BadBody { .. } => SourceError::Reply {
            message: format!("meta-core: {error}"),
        },
    }
}

/// Runs `job` over `inputs` with at most `concurrency` in flight; results
/// come back in input order. The first error wins.
pub(crate) async fn bounded<Input, Output, Job, Fut>(
    inputs: Vec<Input>,
    concurrency: usize,
    job: Job,
) -> Result<Vec<Output>, SourceError>
where
    Input: Send + 'static,
    Output: Send + 'static,
    Job: Fn(Input) -> Fut,
    Fut: std::future::Future<Output = Result<Output, SourceError>> + Send + 'static,
{
    let total = inputs.len();
    let mut results: Vec<Option<Output>> = (0..total).map(|_| None).collect();
    let mut running = JoinSet::new();
    let mut inputs = inputs.into_iter().enumerate();
    loop {
        while running.len() < concurrency.max(1) {
            let Some((index, input)) = inputs.next() else {
                break;
            };
            let future = job(input);
            running.spawn(async move { (index, future.await) });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (index, result) = joined.map_err(|error| SourceError::Reply {
            message: format!("meta-core request task failed: {error}"),
        })?;
        results[index] = Some(result?);
    }
    Ok(results.into_iter().flatten().collect())
}

/// Current values of `(hash, property)` keys: one GET each, `concurrency`
/// at a time; 404 means gone.
pub(crate) async fn fetch_values(
    client: &HttpClient,
    api_url: &str,
    keys: Vec<(String, String)>,
    concurrency: usize,
) -> Result<FetchedValues, SourceError> {
    let answers = bounded(keys, concurrency, |(hash_id, property)| {
        let client = client.clone();
        let url = value_url(api_url, &hash_id, &property);
        async move {
            let response = client.get(&url, &[]).await.map_err(source_error)?;
            let value = match response.status {
                200 => Some(response.body),
                404 => None,
                status => {
                    return Err(source_error(HttpError::Status {
                        url,
                        status,
                        retry_after: response.retry_after,
                    }));
                }
            };
            Ok((hash_id, property, value))
        }
    })
    .await?;
    let mut values = FetchedValues::with_capacity(answers.len());
    for (hash_id, property, value) in answers {
        values.push_bytes(&hash_id, &property, value.as_deref());
    }
    Ok(values)
}

/// One document of `GET /meta/{hash}`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Document {
    #[serde(default)]
    pub(crate) metadata: serde_json::Map<String, serde_json::Value>,
}

/// `GET /meta/{hash}` for every hash, `concurrency` at a time; an unknown
/// root (404) is an empty document.
pub(crate) async fn fetch_documents(
    client: &HttpClient,
    api_url: &str,
    hash_ids: Vec<String>,
    concurrency: usize,
) -> Result<Vec<(String, Document)>, SourceError> {
    bounded(hash_ids, concurrency, |hash_id| {
        let client = client.clone();
        let url = document_url(api_url, &hash_id);
        async move {
            match client.get_json::<Document>(&url).await {
                Ok(document) => Ok((hash_id, document)),
                Err(HttpError::Status { status: 404, .. }) => Ok((
                    hash_id,
                    Document {
                        metadata: serde_json::Map::new(),
                    },
                )),
                Err(error) => Err(source_error(error)),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_segment_of_a_key_is_percent_encoded() {
        assert_eq!(
            value_url("http://c", "h 1", "titles/eng name?"),
            "http://c/meta/h%201/titles/eng%20name%3F"
        );
    }
}
