//! A bump allocator for one-shot instances.
//!
//! The host instantiates the component afresh for every event, so nothing
//! needs to be freed: allocation moves a pointer up from `__heap_base`, free
//! is a no-op (except that freeing or growing the most recent block reuses its
//! space). A typical event is served from the initial memory; `memory.grow`
//! runs only when a large payload needs more.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::UnsafeCell;

const PAGE: usize = 65536;

struct State {
    /// Next free byte (0 until first use).
    next: usize,
    /// End of the memory currently available.
    end: usize,
    /// Start of the most recent allocation.
    last: usize,
}

pub struct Bump(UnsafeCell<State>);

// Wasm32 guests here are single-threaded.
unsafe impl Sync for Bump {}

#[global_allocator]
static ALLOC: Bump = Bump(UnsafeCell::new(State { next: 0, end: 0, last: 0 }));

extern "C" {
    static __heap_base: u8;
}

impl State {
    #[inline]
    unsafe fn init(&mut self) {
        if self.next == 0 {
            self.next = core::ptr::addr_of!(__heap_base) as usize;
            self.end = wasm32::memory_size(0) * PAGE;
            self.last = self.next;
        }
    }

    /// Make sure `[.., new_end)` is inside memory, growing it if needed.
    #[inline]
    fn reserve(&mut self, new_end: usize) -> bool {
        if new_end <= self.end {
            return true;
        }
        let pages = (new_end - self.end).div_ceil(PAGE);
        if wasm32::memory_grow(0, pages) == usize::MAX {
            return false;
        }
        self.end += pages * PAGE;
        true
    }
}

unsafe impl GlobalAlloc for Bump {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let s = &mut *self.0.get();
        s.init();
        let start = (s.next + layout.align() - 1) & !(layout.align() - 1);
        let Some(new_end) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if !s.reserve(new_end) {
            return core::ptr::null_mut();
        }
        s.next = new_end;
        s.last = start;
        start as *mut u8
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        let s = &mut *self.0.get();
        if ptr as usize == s.last {
            s.next = s.last;
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let s = &mut *self.0.get();
        if ptr as usize == s.last {
            // The most recent block: grow or shrink it in place.
            let Some(new_end) = s.last.checked_add(new_size) else {
                return core::ptr::null_mut();
            };
            if !s.reserve(new_end) {
                return core::ptr::null_mut();
            }
            s.next = new_end;
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            core::ptr::copy_nonoverlapping(ptr, new, layout.size());
        }
        new
    }
}
