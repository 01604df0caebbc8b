//! Profiles stored in fixed-size chunks. A `Vec<Profile>` doubles by copying: at two million
//! profiles that is a transient second copy of several hundred MB, exactly when memory peaks
//! (a bulk import). Chunks never move, so growth costs one chunk at a time.

use std::ops::{Index, IndexMut};

const CHUNK_BITS: u32 = 15;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A growable array of `T`, indexed like a `Vec`, that never reallocates its elements.
#[derive(Debug, Clone)]
pub struct Slab<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, value: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk with room").push(value);
        self.len += 1;
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index >> CHUNK_BITS)?.get(index & (CHUNK - 1))
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.chunks.get_mut(index >> CHUNK_BITS)?.get_mut(index & (CHUNK - 1))
    }
}

impl<T> Index<usize> for Slab<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        self.get(index).unwrap_or_else(|| panic!("slab index {index} out of bounds ({})", self.len))
    }
}

impl<T> IndexMut<usize> for Slab<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        let len = self.len;
        self.get_mut(index).unwrap_or_else(|| panic!("slab index {index} out of bounds ({len})"))
    }
}

impl<T> FromIterator<T> for Slab<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut slab = Slab::default();
        for value in iter {
            slab.push(value);
        }
        slab
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_across_chunks_like_a_vec() {
        let mut slab = Slab::default();
        for i in 0..(CHUNK * 2 + 5) {
            slab.push(i);
        }
        assert_eq!(slab.len(), CHUNK * 2 + 5);
        assert_eq!(slab[0], 0);
        assert_eq!(slab[CHUNK - 1], CHUNK - 1);
        assert_eq!(slab[CHUNK], CHUNK);
        assert_eq!(slab[CHUNK * 2 + 4], CHUNK * 2 + 4);
        assert_eq!(slab.get(CHUNK * 2 + 5), None);
        slab[CHUNK + 1] = 7;
        assert_eq!(slab[CHUNK + 1], 7);
    }
}
