//! Page patches: a paged file's changed chunks stored as the changed pages
//! of the parent's chunk at the same offset (see ARCHITECTURE.md,
//! "Page patches, not page-sized chunks").

use crate::error::Result;
use crate::format;
use crate::snapshot::{ContentRef, Pages, Patch};
use crate::writer::{is_hole, Writer};

/// Writes the pieces of one file, in order, patching paged ones against the
/// parent's pieces at the same offsets.
pub(super) struct Pieces<'a> {
    writer: &'a Writer,
    page: Option<usize>,
    old: &'a [ContentRef],
    old_at: usize,
    old_offset: u64,
}

impl<'a> Pieces<'a> {
    /// The pieces of a file cut for `writer`, with pages of `page` bytes
    /// (`None`: stored whole), patched against the parent's `old` pieces.
    pub(super) fn new(writer: &'a Writer, page: Option<usize>, old: &'a [ContentRef]) -> Self {
        Pieces {
            writer,
            page,
            old,
            old_at: 0,
            old_offset: 0,
        }
    }

    /// The parent's piece starting at `offset`, if one does.
    fn old_at(&mut self, offset: u64) -> Option<&ContentRef> {
        while self.old_offset < offset && self.old_at < self.old.len() {
            self.old_offset += self.old[self.old_at].len;
            self.old_at += 1;
        }
        self.old
            .get(self.old_at)
            .filter(|_| self.old_offset == offset)
    }

    /// Stores the piece of `data` at `offset`: its reference.
    pub(super) fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<ContentRef> {
        let Some(page) = self.page else {
            return self.writer.write_chunk(data);
        };
        let len = data.len() as u64;
        if is_hole(&data) {
            return Ok(ContentRef::plain(None, len));
        }
        let writer = self.writer;
        let mut marks = Vec::with_capacity(data.len() / page);
        let Some(id) = writer
            .keyring()
            .chunk_id_with_pages(&data, page, &mut marks)
        else {
            return writer.write_chunk(data);
        };
        let old = self.old_at(offset).filter(|o| o.len == len);
        // The same bytes as the parent's piece: its reference, as it is.
        if let Some(o) = old.filter(|o| o.id == Some(id) && o.pages.is_some()) {
            writer.reused();
            return Ok(o.clone());
        }
        // At most half the pages changed since the parent's base: store
        // those pages only. Bases are always whole chunks, so a restore
        // reads at most two chunks for a piece, however long the chain of
        // incremental backups.
        let based = old.and_then(|o| {
            let p = o.pages.as_deref()?;
            let base = o.base()?;
            (p.size as usize == page && p.marks.len() == marks.len() && writer.indexed(&base))
                .then_some((base, p))
        });
        if let Some((base, p)) = based {
            let changed: Vec<usize> = (0..marks.len())
                .filter(|&i| marks[i] != p.marks[i])
                .collect();
            if !changed.is_empty() && changed.len() * 2 <= marks.len() {
                let patch = format::encode_patch(&data, page, &changed);
                let pages = writer.keyring().chunk_id(&patch);
                writer.store(pages, patch)?;
                return Ok(ContentRef {
                    id: Some(id),
                    len,
                    pages: Some(Box::new(Pages {
                        size: page as u32,
                        marks: p.marks.clone(),
                        patch: Some(Patch { base, pages }),
                    })),
                });
            }
        }
        writer.store(id, data)?;
        Ok(ContentRef {
            id: Some(id),
            len,
            pages: Some(Box::new(Pages {
                size: page as u32,
                marks,
                patch: None,
            })),
        })
    }
}
