//! Which frames leave together as one UDP GSO send (pure planning; the
//! send itself is `sys::send_gso`).

use crate::sys::GsoRun;

/// Kernel limits for one UDP GSO send (UDP_MAX_SEGMENTS is 64 on older kernels).
pub const GSO_MAX_SEGS: usize = 64;
pub const GSO_MAX_BYTES: usize = 65_000;

/// Group frames `0..n` (lengths `len(i)`, destinations compared by
/// `same_dest(i, j)`) into GSO runs. Pure; returns how many runs were written.
/// `max_segs` 1 plans one datagram per frame (no GSO).
pub fn plan_gso_runs(n: usize, prefix: usize, len: impl Fn(usize) -> usize, same_dest: impl Fn(usize, usize) -> bool, runs: &mut [GsoRun], max_segs: usize) -> usize {
    let mut r = 0;
    let mut i = 0;
    while i < n && r < runs.len() {
        let seg = prefix + len(i);
        let (mut count, mut bytes) = (1, seg);
        while i + count < n && count < max_segs.min(GSO_MAX_SEGS) && same_dest(i, i + count) {
            let l = prefix + len(i + count);
            if l > seg || bytes + l > GSO_MAX_BYTES {
                break;
            }
            count += 1;
            bytes += l;
            if l < seg {
                break; // a shorter segment can only be the last one
            }
        }
        runs[r] = GsoRun { first: i, count, seg };
        r += 1;
        i += count;
    }
    r
}

#[cfg(test)]
mod gso_tests {
    use super::*;

    fn plan(lens: &[usize], dests: &[u8]) -> Vec<GsoRun> {
        let mut runs = [GsoRun::default(); 64];
        let n = plan_gso_runs(lens.len(), 0, |i| lens[i], |a, b| dests[a] == dests[b], &mut runs, GSO_MAX_SEGS);
        runs[..n].to_vec()
    }

    #[test]
    fn equal_sizes_one_run() {
        assert_eq!(plan(&[64; 10], &[0; 10]), vec![GsoRun { first: 0, count: 10, seg: 64 }]);
    }

    #[test]
    fn shorter_frame_ends_a_run_larger_starts_one() {
        let runs = plan(&[100, 100, 60, 100, 200], &[0; 5]);
        assert_eq!(runs, vec![GsoRun { first: 0, count: 3, seg: 100 }, GsoRun { first: 3, count: 1, seg: 100 }, GsoRun { first: 4, count: 1, seg: 200 }]);
    }

    #[test]
    fn max_segs_one_means_single_datagrams() {
        let mut runs = [GsoRun::default(); 64];
        assert_eq!(plan_gso_runs(5, 8, |_| 64, |_, _| true, &mut runs, 1), 5);
        assert!(runs[..5].iter().all(|r| r.count == 1 && r.seg == 72));
    }

    #[test]
    fn destinations_split_runs_and_bytes_are_bounded() {
        assert_eq!(plan(&[64; 4], &[0, 0, 1, 1]).len(), 2);
        let runs = plan(&[9000; 20], &[0; 20]);
        assert!(runs.iter().all(|r| r.count * 9000 <= GSO_MAX_BYTES));
        assert_eq!(runs.iter().map(|r| r.count).sum::<usize>(), 20);
    }
}
