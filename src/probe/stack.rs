//! Giving back the stack pages a deep phase touched.
//!
//! A `wss://` handshake runs about 30 KiB deep (rustls and webpki keep large
//! values on the stack); afterwards the run waits for a reply, or the probe
//! thread sleeps until its next tick, a few KiB deep. The pages in between
//! stay resident: with a thread per probe, a thousand probes would keep some
//! 30 MB of dead stack. `release_unused` hands those pages back to the
//! kernel (`MADV_DONTNEED`); the next deep call gets fresh zeroed pages,
//! which costs a few page faults per run.

use std::cell::Cell;

/// Left untouched below this function's frame: more than the x86_64 red
/// zone (128 bytes) and the few bytes `madvise` needs. Everything resident
/// within it stays resident, so it is kept to one page.
const MARGIN: usize = 4 * 1024;

thread_local! {
    /// The lowest address of this thread's stack, looked up once.
    static STACK_LOW: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Releases this thread's stack pages below the caller's frame (less a
/// margin). Best effort: does nothing where the bounds cannot be found.
#[cfg(target_os = "linux")]
pub fn release_unused() {
    let Some(low) = stack_low() else {
        return;
    };
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let high = here.saturating_sub(MARGIN) & !(page - 1);
    if high <= low {
        return;
    }
    // SAFETY: [low, high) lies within this thread's own stack mapping and
    // below the live frames (the stack grows down from above `here`, and
    // MARGIN covers the red zone and the frames of this call), so no live
    // value is there. MADV_DONTNEED on private anonymous memory only makes
    // the pages read back as zeros on the next touch.
    unsafe {
        libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
    }
}

#[cfg(not(target_os = "linux"))]
pub fn release_unused() {}

#[cfg(target_os = "linux")]
fn stack_low() -> Option<usize> {
    if let Some(low) = STACK_LOW.with(Cell::get) {
        return Some(low);
    }
    // SAFETY: `attr` is initialised by pthread_getattr_np before it is read
    // and destroyed once; the out-pointers are valid locals.
    let low = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let found = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        found.then_some(addr as usize)?
    };
    STACK_LOW.with(|cell| cell.set(Some(low)));
    Some(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn deep(depth: usize) -> u64 {
        let mut buf = [depth as u8; 4096];
        buf[depth % 4096] = 1;
        let below = if depth > 0 { deep(depth - 1) } else { 0 };
        below + u64::from(buf.iter().map(|b| u32::from(*b)).sum::<u32>())
    }

    #[test]
    fn released_pages_come_back_usable() {
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let first = deep(20);
                release_unused();
                let second = deep(20);
                release_unused();
                (first, second)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result.0, result.1);
    }
}
