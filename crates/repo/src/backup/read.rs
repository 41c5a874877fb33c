//! Reading a tree backup's files: each through the chunker into the
//! writer, page patches for paged files, on parallel readers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use lifeboat_chunker::ChunkerConfig;

use super::pieces::Pieces;
use super::policy::TreePolicy;
use crate::error::{RepoError, Result};
use crate::parallel::{cores, Pool};
use crate::progress::Progress;
use crate::snapshot::{ContentRef, Node, NodeKind};
use crate::writer::Writer;

/// The outcome of reading one file: its content and size, or why it was skipped.
pub(super) type FileRead = std::result::Result<(Vec<ContentRef>, u64), String>;

/// Files up to this size are read whole into an exact-size buffer and cut in
/// memory; larger ones are streamed through the chunker's buffer.
const READ_WHOLE: u64 = 4 << 20;

/// What reading a tree's files needs: the policy, the repository's chunking,
/// the writer the chunks go to, and where progress goes.
#[derive(Clone, Copy)]
pub(super) struct FileReader<'a> {
    pub(super) policy: &'a dyn TreePolicy,
    pub(super) chunker: ChunkerConfig,
    pub(super) writer: &'a Writer,
    pub(super) progress: &'a dyn Progress,
}

impl FileReader<'_> {
    /// Reads the files `jobs` (positions in `nodes`) on parallel readers,
    /// each from its place in `sources`, patched against its piece list in
    /// `parent_nodes`: per job, in order, the outcome (`None` for an item
    /// with no source). The first error stops every reader and is returned:
    /// the backup has failed.
    pub(super) fn read_all(
        &self,
        jobs: &[usize],
        nodes: &[Node],
        sources: &HashMap<String, PathBuf>,
        parent_nodes: &HashMap<&str, &Node>,
    ) -> Result<Vec<Option<FileRead>>> {
        let readers = Pool::new(cores().min(jobs.len().max(1)));
        readers.try_map(jobs, |&i| {
            let node = &nodes[i];
            let Some(src) = sources.get(&node.path) else {
                return Ok(None);
            };
            let old = parent_nodes
                .get(node.path.as_str())
                .filter(|o| o.kind == NodeKind::File)
                .map(|o| o.content.as_slice());
            self.read_file(src, &node.path, node.size, old).map(Some)
        })
    }

    /// Reads one file through the chunker into the writer.
    fn read_file(
        &self,
        path: &Path,
        name: &str,
        size_hint: u64,
        old: Option<&[ContentRef]>,
    ) -> Result<FileRead> {
        let &FileReader {
            policy,
            chunker: default_chunker,
            writer,
            progress,
        } = self;
        let chunker = &policy.chunker(name, default_chunker);
        let mut pieces = Pieces::new(writer, policy.page_size(name), old.unwrap_or_default());
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Err(super::policy::VANISHED.into()))
            }
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mut content = Vec::new();
        let mut size = 0u64;
        if size_hint <= READ_WHOLE {
            let mut data = Vec::with_capacity(size_hint as usize);
            if let Err(e) = (&file).read_to_end(&mut data) {
                return Ok(Err(format!("read failed: {e}")));
            }
            policy.inspect(name, &file, 0, &data);
            let cuts = chunker
                .cut(&data)
                .map_err(|e| RepoError::Invalid(e.to_string()))?;
            if cuts.len() == 1 {
                // The common case for small files: hand over the buffer itself.
                size = data.len() as u64;
                content.push(pieces.write(0, data)?);
            } else {
                for r in cuts {
                    let at = size;
                    size += r.len() as u64;
                    content.push(pieces.write(at, data[r].to_vec())?);
                }
            }
            progress.advance(size);
            return Ok(Ok((content, size)));
        }
        let chunks = chunker
            .chunker(&file)
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        for chunk in chunks {
            match chunk {
                Ok(data) => {
                    let n = data.len() as u64;
                    policy.inspect(name, &file, size, &data);
                    content.push(pieces.write(size, data)?);
                    size += n;
                    progress.advance(n);
                }
                Err(e) => return Ok(Err(format!("read failed: {e}"))),
            }
        }
        Ok(Ok((content, size)))
    }
}
