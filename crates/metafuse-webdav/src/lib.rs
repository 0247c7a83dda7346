//! metafuse-webdav: the live virtual tree served read-only over WebDAV
//! (for Windows, macOS Finder, Infuse, Kodi...), with per-device tokens.
//!
//! The protocol is dav-server's; this crate supplies the tree (same names
//! and inodes as the mount, bytes from metafuse-bytes), the token store
//! (spec §11) and the guards (Basic auth, rate limit, read-only, finite
//! depth).
//!
//! ```no_run
//! # async fn demo(library: metafuse_vfs::SharedLibrary) -> std::io::Result<()> {
//! use std::sync::Arc;
//! let sources = metafuse_bytes::ByteSources::new("/files", None).expect("plain url");
//! let tokens = Arc::new(metafuse_webdav::TokenStore::new("/config".as_ref()));
//! let auth = metafuse_webdav::WebdavAuth::Tokens(tokens);
//! let server = Arc::new(metafuse_webdav::WebdavServer::new(library, sources, auth, ""));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! metafuse_webdav::serve(listener, server, std::future::pending()).await
//! # }
//! ```
#![warn(missing_docs)]

mod server;
mod tokens;
mod tree_fs;

pub use dav_server::body::Body as WebdavBody;
pub use server::{REALM, WebdavAuth, WebdavServer, serve};
pub use tokens::{
    MAX_LABEL_CHARS, NewToken, TOKEN_FILE_NAME, TokenInfo, TokenStore, TokenStoreError,
};
