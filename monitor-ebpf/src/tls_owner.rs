//! Who connected each TCP socket, for its first TLS hello: egress.rs keeps the connecting
//! process's header at connect, dns_question.rs takes it with the socket's first data segment
//! (a packet program, where the sender is not known).
//!
//! A direct-mapped table indexed by the socket cookie's low bits, not a hash map: every TCP
//! connect of every process keeps an owner, and an LRU hash insert (its free-list pop, and an
//! eviction once full) was the connect hook's largest single cost; every data segment of every
//! TCP socket looks one up, and an array lookup is a bounds check and an add, no helper call.
//! Cookies come from per-CPU batches of consecutive numbers, so a slot is taken over by a
//! socket made thousands of sockets later: as the LRU forgot the oldest first, this forgets
//! roughly the oldest (a socket whose hello comes after thousands of newer sockets has its
//! hello unattributed, never misattributed: the cookie is checked).
//!
//! Concurrency: a writer on another CPU may take the slot over while a reader copies it. The
//! writer clears the cookie, writes the header, then writes its cookie; the reader checks the
//! cookie before and after its copy, so a copy that overlapped a takeover is refused. Stores
//! and loads are volatile, in that order in the program (x86's total store order keeps it in
//! the machine).

use monitor_common::EventHeader;

use crate::{kernel::copy_header, TlsOwner, TLS_OWNERS, TLS_OWNER_SLOTS};

#[inline(always)]
fn slot(cookie: u64) -> Option<*mut TlsOwner> {
    TLS_OWNERS.get_ptr_mut((cookie as u32) & (TLS_OWNER_SLOTS - 1))
}

/// Keeps `header` as the owner of the socket with `cookie` (cookie 0: none, never kept).
#[inline(always)]
pub unsafe fn keep(cookie: u64, header: *const EventHeader) {
    if cookie == 0 {
        return;
    }
    let Some(slot) = slot(cookie) else {
        return;
    };
    core::ptr::write_volatile(&raw mut (*slot).cookie, 0);
    copy_header(&raw mut (*slot).header, header);
    core::ptr::write_volatile(&raw mut (*slot).cookie, cookie);
}

/// Copies the owner of the socket with `cookie` into `into` and forgets it (a socket's hello is
/// reported once); false when none is kept (or it was taken over during the copy).
#[inline(always)]
pub unsafe fn take(cookie: u64, into: *mut EventHeader) -> bool {
    let Some(slot) = slot(cookie) else {
        return false;
    };
    if cookie == 0 || core::ptr::read_volatile(&raw const (*slot).cookie) != cookie {
        return false;
    }
    copy_header(into, &raw const (*slot).header);
    if core::ptr::read_volatile(&raw const (*slot).cookie) != cookie {
        return false;
    }
    forget(cookie);
    true
}

/// Whether an owner is kept for the socket with `cookie`.
#[inline(always)]
pub unsafe fn kept(cookie: u64) -> bool {
    cookie != 0
        && slot(cookie).is_some_and(|s| core::ptr::read_volatile(&raw const (*s).cookie) == cookie)
}

/// Forgets the owner of the socket with `cookie`, if still kept.
#[inline(always)]
pub unsafe fn forget(cookie: u64) {
    if let Some(slot) = slot(cookie) {
        // A takeover between this check and the store loses the new owner's hello record at
        // worst (its cookie is cleared), never attributes it wrongly.
        if core::ptr::read_volatile(&raw const (*slot).cookie) == cookie {
            core::ptr::write_volatile(&raw mut (*slot).cookie, 0);
        }
    }
}
