//! vdeplug4 stream framing (stdin/stdout, cmd://, dpipe): each frame is
//! preceded by its length as a 2-byte big-endian number. A push decoder that,
//! unlike the C one, keeps a length header split across two reads, and
//! recovers from a length above the maximum (which C answers by losing sync):
//! if the bytes after it are consistent with a frame of that length, exactly
//! that frame is skipped; if not (the length lied), decoding resumes at the
//! first offset from which the buffered bytes parse as whole frames, or at
//! the next read (writers send whole frames per write).

use super::ETH_BUFSIZE;

/// Largest length accepted on a stream (vdeplug4: VDE_ETHBUFSIZE + 2).
pub const MAX_STREAM_FRAME: usize = ETH_BUFSIZE + 2;
pub const LEN_PREFIX: usize = 2;

pub fn encode_len(len: usize) -> [u8; 2] {
    (len as u16).to_be_bytes()
}

/// What the decoder found next in its buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    Frame(&'a [u8]),
    /// A length above MAX_STREAM_FRAME: the frame is skipped (counted by the caller).
    Oversized(usize),
    NeedMore,
}

/// Buffers bytes from a stream and yields whole frames.
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of an oversized frame still to be skipped.
    skip: usize,
    /// While skipping: where the latest read began (a place to resynchronise).
    boundary: Option<usize>,
    /// Scratch for the resynchronisation search (one flag per buffered byte).
    exact: Vec<bool>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        let size = 4 * (MAX_STREAM_FRAME + LEN_PREFIX);
        Decoder { buf: vec![0; size], start: 0, end: 0, skip: 0, boundary: None, exact: vec![false; size + 1] }
    }

    /// Free space to read into (compacts first so a whole frame always fits).
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.start == self.end || self.buf.len() - self.end < MAX_STREAM_FRAME + LEN_PREFIX) {
            self.buf.copy_within(self.start..self.end, 0);
            self.boundary = self.boundary.map(|b| b.saturating_sub(self.start));
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Record that `n` bytes were read into `space()`.
    pub fn filled(&mut self, n: usize) {
        if self.skip > 0 && n > 0 {
            self.boundary = Some(self.end);
        }
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Feed bytes directly (tests and non-fd sources).
    pub fn push(&mut self, data: &[u8]) -> usize {
        let space = self.space();
        let n = data.len().min(space.len());
        space[..n].copy_from_slice(&data[..n]);
        self.filled(n);
        n
    }

    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// True when a whole frame (or an oversized header) is ready.
    pub fn has_frame(&self) -> bool {
        if self.skip > 0 {
            return self.buffered() > 0;
        }
        let avail = self.buffered();
        if avail < LEN_PREFIX {
            return false;
        }
        let len = u16::from_be_bytes([self.buf[self.start], self.buf[self.start + 1]]) as usize;
        len > MAX_STREAM_FRAME || avail >= LEN_PREFIX + len
    }

    pub fn next_frame(&mut self) -> Next<'_> {
        loop {
            if self.skip > 0 {
                // A read that starts with whole frames means the big length lied.
                if let Some(b) = self.boundary.take() {
                    if b >= self.start && self.parses_to_end(b, false) {
                        self.skip = 0;
                        self.start = b;
                        continue;
                    }
                }
                let n = self.skip.min(self.buffered());
                self.start += n;
                self.skip -= n;
                if self.skip > 0 {
                    return Next::NeedMore;
                }
            }
            let avail = self.buffered();
            if avail < LEN_PREFIX {
                return Next::NeedMore;
            }
            let s = self.start;
            let len = u16::from_be_bytes([self.buf[s], self.buf[s + 1]]) as usize;
            if len == 0 {
                self.start += LEN_PREFIX;
                continue;
            }
            if len > MAX_STREAM_FRAME {
                self.start += LEN_PREFIX;
                self.after_oversized(len);
                return Next::Oversized(len);
            }
            if avail < LEN_PREFIX + len {
                return Next::NeedMore;
            }
            self.start += LEN_PREFIX + len;
            return Next::Frame(&self.buf[s + LEN_PREFIX..s + LEN_PREFIX + len]);
        }
    }

    /// Just past an oversized length: skip that frame if what follows is
    /// consistent with it, else resynchronise.
    fn after_oversized(&mut self, len: usize) {
        if self.buffered() >= len && self.parses_to_end(self.start + len, true) {
            self.start += len; // an honest (if too big) frame
            return;
        }
        if let Some(q) = self.first_exact_offset() {
            self.start = q;
            return;
        }
        // Not decidable yet: assume honesty, but check each new read.
        let n = len.min(self.buffered());
        self.start += n;
        self.skip = len - n;
        self.boundary = None;
    }

    /// Do the bytes from `q` to the end of the buffer parse as whole frames
    /// (and, with `partial`, a last frame still arriving)?
    fn parses_to_end(&self, mut q: usize, partial: bool) -> bool {
        while q < self.end {
            if self.end - q < LEN_PREFIX {
                return partial;
            }
            let l = u16::from_be_bytes([self.buf[q], self.buf[q + 1]]) as usize;
            if l != 0 && !(crate::wire::ethernet::HEADER_LEN..=MAX_STREAM_FRAME).contains(&l) {
                return false;
            }
            q += LEN_PREFIX + l;
        }
        q == self.end || partial
    }

    /// The first offset (after `start`, with data after it) from which the
    /// buffered bytes parse as whole frames; linear time, from the end back.
    fn first_exact_offset(&mut self) -> Option<usize> {
        let (s, e) = (self.start, self.end);
        if s >= e {
            return None;
        }
        let ok = &mut self.exact[..=e - s];
        ok[e - s] = true;
        for q in (s..e).rev() {
            let i = q - s;
            ok[i] = e - q >= LEN_PREFIX && {
                let l = u16::from_be_bytes([self.buf[q], self.buf[q + 1]]) as usize;
                let next = q + LEN_PREFIX + l;
                (l == 0 || (crate::wire::ethernet::HEADER_LEN..=MAX_STREAM_FRAME).contains(&l)) && next <= e && ok[next - s]
            };
        }
        (s..e).find(|&q| ok[q - s])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            v.extend_from_slice(&encode_len(f.len()));
            v.extend_from_slice(f);
        }
        v
    }

    #[test]
    fn test_two_frames_one_read() {
        let mut d = Decoder::new();
        d.push(&framed(&[&[1; 60], &[2; 100]]));
        assert_eq!(d.next_frame(), Next::Frame(&[1; 60]));
        assert_eq!(d.next_frame(), Next::Frame(&[2; 100]));
        assert_eq!(d.next_frame(), Next::NeedMore);
    }

    #[test]
    fn test_header_split_across_reads() {
        let bytes = framed(&[&[7; 1514]]);
        for cut in 0..bytes.len() {
            let mut d = Decoder::new();
            d.push(&bytes[..cut]);
            assert_eq!(d.next_frame(), Next::NeedMore, "cut at {cut}");
            d.push(&bytes[cut..]);
            assert_eq!(d.next_frame(), Next::Frame(&[7; 1514][..]));
        }
    }

    #[test]
    fn test_zero_length_skipped_and_oversized_keeps_sync() {
        let mut v = vec![0, 0];
        v.extend_from_slice(&encode_len(MAX_STREAM_FRAME + 1));
        v.extend(std::iter::repeat_n(9u8, MAX_STREAM_FRAME + 1));
        v.extend(framed(&[&[3; 64]]));
        for size in [1000, 3, 9300, 20000] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in v.chunks(size) {
                d.push(chunk);
                drain(&mut d, &mut got);
            }
            assert_eq!(got, vec![Err(MAX_STREAM_FRAME + 1), Ok(vec![3; 64])], "chunks of {size}");
        }
    }

    fn drain(d: &mut Decoder, got: &mut Vec<Result<Vec<u8>, usize>>) {
        loop {
            match d.next_frame() {
                Next::Frame(f) => got.push(Ok(f.to_vec())),
                Next::Oversized(n) => got.push(Err(n)),
                Next::NeedMore => break,
            }
        }
    }

    #[test]
    fn test_lying_length_resyncs_on_the_frames_after_it() {
        let lie = [&encode_len(0xffff)[..], &[0x55; 100][..]].concat();
        let good = framed(&[&[1; 60], &[2; 1514]]);
        // All in one read, and in two reads (the frames in their own write).
        for split in [None, Some(lie.len())] {
            let all = [&lie[..], &good[..]].concat();
            let mut d = Decoder::new();
            let mut got = Vec::new();
            match split {
                None => {
                    d.push(&all);
                }
                Some(k) => {
                    d.push(&all[..k]);
                    drain(&mut d, &mut got);
                    d.push(&all[k..]);
                }
            }
            drain(&mut d, &mut got);
            assert_eq!(got, vec![Err(0xffff), Ok(vec![1; 60]), Ok(vec![2; 1514])], "split {split:?}");
        }
    }

    #[test]
    fn test_max_frame_fits() {
        let f = vec![5u8; MAX_STREAM_FRAME];
        let mut d = Decoder::new();
        let bytes = framed(&[&f, &f, &f, &f, &f]);
        let mut pos = 0;
        let mut n = 0;
        while n < 5 {
            pos += d.push(&bytes[pos..]);
            while let Next::Frame(got) = d.next_frame() {
                assert_eq!(got.len(), MAX_STREAM_FRAME);
                n += 1;
            }
        }
    }
}
