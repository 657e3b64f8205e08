//! Who wrote a record: journal identities, so that a journal can never be
//! mistaken for another.
//!
//! Every time a journal is opened — created, reopened after a stop or a
//! crash, or opened from a restored backup or a copied directory — it takes
//! a fresh random [`JournalId`] for the records it appends from then on. A
//! record keeps the identity it was written under for its whole life, so a
//! record resent after a crash carries the same identity (and JetStream
//! recognises the resend), while records written by two different lives —
//! a wiped edge and its predecessor, a restored backup and the original
//! that went on without it, two copies of one directory — never share
//! `(identity, sequence)`.
//!
//! The identities are kept in the file `identity` of the journal directory,
//! one line per life with the first sequence it wrote, oldest first,
//! written atomically (temporary file, fsync, rename, directory fsync) and
//! closed by a CRC32C line:
//!
//! ```text
//! plantd-journal-identity 1
//! 4f1c0a9e7b2d3c58 1
//! a07e55c2d19b8f03 1734
//! crc 1c2b3a49
//! ```
//!
//! Lives whose records are all acknowledged are dropped from the file on
//! open. A journal without the file (new, or written by a plantd without
//! identities) starts its first life at sequence 1, so every record it
//! holds is sent under the new identity. A damaged file is treated the
//! same way, with a warning: records may then be stored twice, never lost.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::JournalError;

/// The file name, inside the journal directory.
pub const FILE: &str = "identity";
const TMP: &str = "identity.tmp";
const HEADER: &str = "plantd-journal-identity 1";

/// Length of a journal id: 16 lowercase hex digits (64 random bits).
pub const ID_LEN: usize = 16;

/// A journal identity: 16 lowercase hex digits, random, taken when a
/// journal is opened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JournalId(String);

impl JournalId {
    /// A new random identity.
    pub fn random() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()))
    }

    /// Parses an identity; `None` unless `s` is 16 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Self(s.to_owned()))
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JournalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One life of a journal: the identity it wrote under and its first
/// sequence (it ends where the next life starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Life {
    /// The identity of this life's records.
    pub id: JournalId,
    /// The sequence of its first record (it may have written none).
    pub first_seq: u64,
}

/// The identities of a journal's records: every life that may still have
/// unacknowledged records, and the current one, oldest first. Fixed for as
/// long as the journal is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Oldest first; never empty; the last is the current life.
    lives: Vec<Life>,
}

/// Where a sequence stands relative to one life of this journal (see
/// [`Identity::locate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// The identity is not one of this journal's known lives.
    Foreign,
    /// The sequence is one this life wrote (or may still write, for the
    /// current life).
    Within,
    /// The life is one of ours, but it went on beyond what this journal
    /// holds: somebody else continued it (this directory is a restored
    /// backup or a copy). `last` is the last sequence of the life here.
    Beyond {
        /// The life's last sequence in this journal.
        last: u64,
    },
}

impl Identity {
    /// An identity made of `lives` (oldest first, the current one last),
    /// for tools and tests; `None` when empty or out of order.
    pub fn from_lives(lives: Vec<Life>) -> Option<Self> {
        let ordered = lives.windows(2).all(|w| w[0].first_seq <= w[1].first_seq);
        (!lives.is_empty() && ordered).then_some(Self { lives })
    }

    /// The identity of the records appended from now on.
    pub fn current(&self) -> &JournalId {
        // Never empty by construction.
        &self.lives[self.lives.len() - 1].id
    }

    /// The first sequence of the current life.
    pub fn current_first_seq(&self) -> u64 {
        self.lives[self.lives.len() - 1].first_seq
    }

    /// Every known life, oldest first.
    pub fn lives(&self) -> &[Life] {
        &self.lives
    }

    /// The identity record `seq` was written under. Sequences before the
    /// oldest known life (all acknowledged long ago) get the oldest one.
    pub fn id_for(&self, seq: u64) -> &JournalId {
        let i = self.lives.partition_point(|l| l.first_seq <= seq);
        &self.lives[i.saturating_sub(1)].id
    }

    /// The sequences life `id` covers here: its first, and its last
    /// (`None` for the current life, which is still writing); `None` when
    /// `id` is not one of this journal's lives.
    pub fn range_of(&self, id: &str) -> Option<(u64, Option<u64>)> {
        let i = self.lives.iter().position(|l| l.id.as_str() == id)?;
        let last = self.lives.get(i + 1).map(|next| next.first_seq - 1);
        Some((self.lives[i].first_seq, last))
    }

    /// Where record `seq` of identity `id` (as read back from JetStream)
    /// stands in this journal.
    pub fn locate(&self, id: &str, seq: u64) -> Located {
        let Some(i) = self.lives.iter().position(|l| l.id.as_str() == id) else {
            return Located::Foreign;
        };
        match self.lives.get(i + 1) {
            Some(next) if seq >= next.first_seq => Located::Beyond {
                last: next.first_seq - 1,
            },
            _ => Located::Within,
        }
    }

    /// Reads the identity file of `dir`, drops the lives whose records are
    /// all acknowledged (`acked`) or that wrote nothing, starts a new life
    /// at `next_seq` and persists the result before returning it.
    ///
    /// # Errors
    /// [`JournalError::Io`] when the file cannot be written.
    pub(crate) fn open(dir: &Path, acked: u64, next_seq: u64) -> Result<Self, JournalError> {
        let mut lives = match fs::read_to_string(dir.join(FILE)) {
            Ok(text) => parse(&text).unwrap_or_else(|| {
                tracing::warn!(
                    file = %dir.join(FILE).display(),
                    "journal identity file is damaged; every unacknowledged record is sent \
                     under a new identity (JetStream may store some of them twice)"
                );
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(JournalError::io(&dir.join(FILE), e)),
        };
        lives.push(Life {
            id: JournalId::random(),
            first_seq: if lives.is_empty() { 1 } else { next_seq },
        });
        let lives = prune(lives, acked);
        write(dir, &lives)?;
        Ok(Self { lives })
    }
}

/// Drops lives that wrote nothing and lives fully acknowledged (keeps the
/// current one).
fn prune(lives: Vec<Life>, acked: u64) -> Vec<Life> {
    let n = lives.len();
    let ends: Vec<Option<u64>> = (0..n)
        .map(|i| lives.get(i + 1).map(|next| next.first_seq))
        .collect();
    lives
        .into_iter()
        .zip(ends)
        .filter(|(life, next_first)| match next_first {
            None => true,
            Some(next_first) => *next_first > life.first_seq && *next_first - 1 > acked,
        })
        .map(|(life, _)| life)
        .collect()
}

fn body(lives: &[Life]) -> String {
    let mut text = String::from(HEADER);
    text.push('\n');
    for l in lives {
        text.push_str(&format!("{} {}\n", l.id, l.first_seq));
    }
    text
}

fn parse(text: &str) -> Option<Vec<Life>> {
    let (content, crc_line) = text.trim_end_matches('\n').rsplit_once('\n')?;
    let crc = u32::from_str_radix(crc_line.strip_prefix("crc ")?, 16).ok()?;
    let content = format!("{content}\n");
    if crc32c::crc32c(content.as_bytes()) != crc {
        return None;
    }
    let mut lines = content.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut lives: Vec<Life> = Vec::new();
    for line in lines {
        let (id, first) = line.split_once(' ')?;
        let life = Life {
            id: JournalId::parse(id)?,
            first_seq: first.parse().ok()?,
        };
        if lives.last().is_some_and(|l| l.first_seq > life.first_seq) {
            return None;
        }
        lives.push(life);
    }
    Some(lives)
}

fn write(dir: &Path, lives: &[Life]) -> Result<(), JournalError> {
    let body = body(lives);
    let text = format!("{body}crc {:08x}\n", crc32c::crc32c(body.as_bytes()));
    let tmp = dir.join(TMP);
    let mut f = File::create(&tmp).map_err(|e| JournalError::io(&tmp, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| JournalError::io(&tmp, e))?;
    f.sync_data().map_err(|e| JournalError::io(&tmp, e))?;
    let path = dir.join(FILE);
    fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> JournalId {
        JournalId::parse(&c.to_string().repeat(16)).expect("id")
    }

    fn life(c: char, first_seq: u64) -> Life {
        Life {
            id: id(c),
            first_seq,
        }
    }

    #[test]
    fn ids_are_16_hex_digits() {
        let a = JournalId::random();
        assert_eq!(a.as_str().len(), ID_LEN);
        assert_eq!(JournalId::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a, JournalId::random());
        assert_eq!(JournalId::parse("ABCDEF0123456789"), None);
        assert_eq!(JournalId::parse("abc"), None);
        assert_eq!(JournalId::parse("0123456789abcdeg"), None);
    }

    #[test]
    fn a_new_journal_starts_one_life_at_1_and_each_open_starts_another() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = Identity::open(dir.path(), 0, 1).expect("open");
        assert_eq!(first.lives().len(), 1);
        assert_eq!(first.current_first_seq(), 1);
        // Wrote 1..=10, acknowledged 4: the first life is kept.
        let second = Identity::open(dir.path(), 4, 11).expect("reopen");
        assert_eq!(second.lives().len(), 2);
        assert_eq!(second.lives()[0], first.lives()[0]);
        assert_eq!(second.current_first_seq(), 11);
        assert_ne!(second.current(), first.current());
        assert_eq!(second.id_for(10), first.current());
        assert_eq!(second.id_for(11), second.current());
        // Everything acknowledged: the first life goes.
        let third = Identity::open(dir.path(), 10, 11).expect("reopen");
        assert_eq!(third.lives().len(), 1, "{third:?}");
        assert_eq!(third.current_first_seq(), 11);
    }

    #[test]
    fn lives_that_wrote_nothing_are_dropped() {
        let lives = vec![life('a', 1), life('b', 5), life('c', 5), life('d', 9)];
        assert_eq!(
            prune(lives, 0),
            vec![life('a', 1), life('c', 5), life('d', 9)]
        );
    }

    #[test]
    fn locate_tells_ours_foreign_and_continued_by_someone_else() {
        let ident = Identity {
            lives: vec![life('a', 1), life('b', 101)],
        };
        assert_eq!(ident.locate(id('a').as_str(), 50), Located::Within);
        assert_eq!(
            ident.locate(id('a').as_str(), 300),
            Located::Beyond { last: 100 }
        );
        assert_eq!(ident.locate(id('b').as_str(), 5000), Located::Within);
        assert_eq!(ident.locate(id('c').as_str(), 1), Located::Foreign);
        assert_eq!(ident.range_of(id('a').as_str()), Some((1, Some(100))));
        assert_eq!(ident.range_of(id('b').as_str()), Some((101, None)));
        assert_eq!(ident.range_of(id('c').as_str()), None);
        assert_eq!(ident.id_for(0), &id('a'));
        assert_eq!(ident.id_for(100), &id('a'));
        assert_eq!(ident.id_for(101), &id('b'));
    }

    #[test]
    fn a_damaged_file_means_a_fresh_identity_for_everything() {
        let dir = tempfile::tempdir().expect("tmp");
        Identity::open(dir.path(), 0, 1).expect("open");
        let path = dir.path().join(FILE);
        let text = fs::read_to_string(&path).expect("read");
        fs::write(&path, text.replace(" 1\n", " 2\n")).expect("damage");
        let again = Identity::open(dir.path(), 0, 7).expect("reopen");
        assert_eq!(again.lives().len(), 1);
        assert_eq!(again.current_first_seq(), 1, "covers every record held");
    }
}
