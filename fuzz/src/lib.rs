//! What the fuzz targets share: a stream made of the fuzzer's bytes, cut
//! into chunks the fuzzer chooses, put under the probe's own code through
//! `wsprobe::probe::wire::Wire`; an allocator that counts; the probe the
//! targets run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use wsprobe::config;
use wsprobe::probe::deadline::Deadline;
use wsprobe::probe::wire::Wire;
use wsprobe::spec::ProbeSpec;

/// The key every fuzzed request carries, so the answer can be right.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The largest reply the fuzzed probe reads (the least the config allows).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// A round-trip probe sending "ping", expecting "pong", made by the real
/// config loader.
pub fn spec() -> &'static ProbeSpec {
    static SPEC: OnceLock<ProbeSpec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = format!(
            r#"{{"probes": [{{"name": "fuzz", "url": "ws://127.0.0.1:9/ws",
                "interpretation": "round_trip_latency", "send_message": "ping",
                "expect_message": "pong", "max_message_bytes": {MAX_MESSAGE_BYTES}}}]}}"#
        );
        let loaded = config::load_str(&text, &|_| None);
        // invariant: a fixed, valid config
        loaded
            .expect("the fuzz probe's config loads")
            .probes
            .remove(0)
    })
}

/// A `Wire` that reads `data` in chunks drawn from `seed`, takes every
/// write, and then ends as the peer or the deadline would: EOF or
/// `TimedOut`, as `seed` says.
pub struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    rng: u32,
    timed_out_at_end: bool,
    pub written: usize,
}

impl<'a> Chunked<'a> {
    pub fn new(data: &'a [u8], seed: u16) -> Self {
        Chunked {
            data,
            pos: 0,
            rng: u32::from(seed) | 1,
            timed_out_at_end: seed & 1 == 0,
            written: 0,
        }
    }

    /// Splits fuzz input into its first two bytes (the seed) and the rest.
    pub fn split(input: &[u8]) -> (u16, &[u8]) {
        match input {
            [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
            _ => (0, input),
        }
    }

    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// One byte, a few, a segment's worth, or all there is.
    fn next_chunk(&mut self) -> usize {
        self.rng = self.rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let r = self.rng >> 8;
        match r & 3 {
            0 => 1,
            1 => (r >> 2) as usize % 16 + 1,
            2 => (r >> 2) as usize % 1500 + 1,
            _ => usize::MAX,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data.len() - self.pos;
        if left == 0 {
            if self.timed_out_at_end {
                return Err(io::ErrorKind::TimedOut.into());
            }
            return Ok(0);
        }
        let n = self.next_chunk().min(left).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Chunked<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire for Chunked<'_> {
    fn set_deadline(&mut self, _: Deadline) {}
    fn shutdown(&mut self) {}
    fn reset(&mut self) {}
}

/// The global allocator of a target that checks memory: `System`, with
/// the bytes live now and the most live since `Counting::reset_peak`.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    /// Starts a measurement; returns the bytes live now.
    pub fn reset_peak() -> usize {
        let live = LIVE.load(Ordering::SeqCst);
        PEAK.store(live, Ordering::SeqCst);
        live
    }

    pub fn peak() -> usize {
        PEAK.load(Ordering::SeqCst)
    }

    fn grew(by: usize) {
        let live = LIVE.fetch_add(by, Ordering::SeqCst) + by;
        PEAK.fetch_max(live, Ordering::SeqCst);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            Counting::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            Counting::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size > layout.size() {
                Counting::grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}
