//! How many list documents an isolate reads and checks at once.
//!
//! Each may hold its body as sent (up to `max_list_body_bytes`) and inflated
//! (up to `max_list_document_bytes`) while it is checked and forwarded, and
//! one isolate's requests share its memory (128 MB on Workers). A document
//! past the cap is refused at once with `503 too-many-documents` and
//! `Retry-After: 1`, the answer the origin gives when its own cap stays
//! full; an isolate has no thread to wait on, and the client retries.

use std::cell::Cell;
use std::rc::Rc;

/// The documents being read in this isolate, against a cap.
#[derive(Debug)]
pub struct Documents {
    held: Rc<Cell<usize>>,
}

/// One document's place; given back when dropped.
#[derive(Debug)]
pub struct Permit(Rc<Cell<usize>>);

impl Documents {
    /// None held yet.
    pub fn new() -> Documents {
        Documents {
            held: Rc::new(Cell::new(0)),
        }
    }

    /// A place for one more document if fewer than `cap` are held.
    pub fn try_take(&self, cap: usize) -> Option<Permit> {
        let n = self.held.get();
        (n < cap).then(|| {
            self.held.set(n + 1);
            Permit(self.held.clone())
        })
    }
}

impl Default for Documents {
    fn default() -> Self {
        Documents::new()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_cap_at_once_and_places_come_back() {
        let d = Documents::new();
        let a = d.try_take(2).expect("first");
        let b = d.try_take(2).expect("second");
        assert!(d.try_take(2).is_none(), "a third is refused");
        drop(a);
        let c = d.try_take(2).expect("a place came back");
        assert!(d.try_take(2).is_none(), "and only one");
        drop((b, c));
        assert!(
            d.try_take(2).is_some() && d.try_take(2).is_some(),
            "all back"
        );
    }
}
