//! The file's order: always the lowest ready index. In a scenario that is the next step of the
//! file (each program is in file order, so the global next step always heads its program); in an
//! exploration, the lowest-numbered operation that can advance.

use super::{Ready, Scheduler};

/// Always the lowest ready index.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileOrder;

impl Scheduler for FileOrder {
    fn name(&self) -> &'static str {
        "file-order"
    }

    fn next(&mut self, ready: &[Ready]) -> Result<Option<usize>, String> {
        Ok(ready.iter().map(|r| r.step).min())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::replay::tests::ready;

    #[test]
    fn file_order_takes_the_lowest_ready_step() {
        assert_eq!(FileOrder.next(&ready(&[4, 1, 7])).unwrap(), Some(1));
        assert_eq!(FileOrder.next(&[]).unwrap(), None);
    }
}
