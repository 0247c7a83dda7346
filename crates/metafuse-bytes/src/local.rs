//! A local source file, opened beneath the files root.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// An open local source: reads at any offset from any thread, and knows
/// its real size (the metadata's size may be wrong).
#[derive(Debug)]
pub struct LocalSource {
    file: File,
    len: u64,
}

impl LocalSource {
    /// Checks that `file` is a regular file and takes its size (`fstat`).
    pub(crate) fn from_file(file: File) -> io::Result<Self> {
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "source is not a regular file",
            ));
        }
        Ok(LocalSource {
            len: metadata.len(),
            file,
        })
    }

    /// The size when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The open file (for kernel passthrough registration).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads exactly `size` bytes at `offset`, fewer only at end of file.
    pub fn read_at(&self, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let mut buffer = vec![0; size];
        let filled = self.read_into(offset, &mut buffer)?;
        buffer.truncate(filled);
        Ok(buffer)
    }

    /// Fills `buffer` from `offset`, short only at end of file; returns
    /// how many bytes were read. For callers that reuse one buffer across
    /// reads (the mount), saving an allocation and its zeroing per read.
    pub fn read_into(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self
                .file
                .read_at(&mut buffer[filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(n_read) => filled += n_read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(filled)
    }
}
