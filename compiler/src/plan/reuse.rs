//! Temporary-buffer reuse: fusion gives every value that crosses items a temporary of its
//! own; here temporaries of one shape whose lifetimes do not overlap share one buffer, as a
//! register allocator shares registers. A temporary lives from the item that writes it to
//! the last item that reads it; two share only when one's last read comes strictly before
//! the other's write, so no item ever reads and writes the same buffer.
//!
//! Sound under guards: a value computed under a guard that did not hold is never read (the
//! plan's invariant), so whatever its buffer holds then is never seen. Muon's unrolled
//! Newton–Schulz loop goes from ~1,600 temporaries to a handful, which is what a parameter
//! costs in memory.

use super::{Buffer, Item};
use gdc_dsl::types::Shape;

/// Renumbers the temporaries of `items` so that non-overlapping ones of one shape share a
/// buffer; `temps` (the shape of each) shrinks to the shared buffers.
pub fn share_temps(items: &mut [Item], temps: &mut Vec<Shape>) {
    let n = temps.len();
    let (mut first, mut last) = (vec![usize::MAX; n], vec![0usize; n]);
    for (i, item) in items.iter().enumerate() {
        let (reads, writes) = buffers(item);
        for t in writes.into_iter().filter_map(temp) {
            first[t] = first[t].min(i);
            last[t] = last[t].max(i);
        }
        for t in reads.into_iter().filter_map(temp) {
            last[t] = last[t].max(i);
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|t| (first[*t], *t));
    // Each shared buffer: its shape and the last item that reads what it holds now.
    let mut shared: Vec<(Shape, usize)> = Vec::new();
    let mut slot = vec![0usize; n];
    for t in order {
        let free = shared
            .iter()
            .position(|(shape, busy_until)| *shape == temps[t] && first[t] != usize::MAX && *busy_until < first[t]);
        slot[t] = match free {
            Some(s) => {
                shared[s].1 = last[t];
                s
            }
            None => {
                shared.push((temps[t].clone(), last[t]));
                shared.len() - 1
            }
        };
    }
    let rename = |b: &mut Buffer| {
        if let Buffer::Temp(t) = b {
            *t = slot[*t];
        }
    };
    for item in items.iter_mut() {
        match item {
            Item::Kernel(k) => {
                k.inputs.iter_mut().for_each(|(_, b)| rename(b));
                k.outputs.iter_mut().for_each(|o| rename(&mut o.buffer));
            }
            Item::Lib(l) => {
                l.inputs.iter_mut().for_each(|(_, b)| rename(b));
                rename(&mut l.output);
            }
        }
    }
    *temps = shared.into_iter().map(|(shape, _)| shape).collect();
}

/// The buffers an item reads and writes.
fn buffers(item: &Item) -> (Vec<Buffer>, Vec<Buffer>) {
    match item {
        Item::Kernel(k) => (k.inputs.iter().map(|(_, b)| *b).collect(), k.outputs.iter().map(|o| o.buffer).collect()),
        Item::Lib(l) => (l.inputs.iter().map(|(_, b)| *b).collect(), vec![l.output]),
    }
}

fn temp(b: Buffer) -> Option<usize> {
    match b {
        Buffer::Temp(t) => Some(t),
        _ => None,
    }
}
