use super::*;

#[test]
fn a_batch_covers_about_a_fifth_of_a_second() {
    assert_eq!(batch_size(0.5), 1);
    assert_eq!(batch_size(4.0), 1);
    assert_eq!(batch_size(10.0), 2);
    assert_eq!(batch_size(25.0), 5);
    assert_eq!(batch_size(1000.0), MAX_BATCH);
    assert_eq!(batch_size(f64::INFINITY), 1);
}

#[test]
fn reservations_are_used_in_order_and_never_late() {
    let interval = Duration::from_millis(100);
    let t0 = Instant::now();
    let mut b = Batch {
        next: Some(t0),
        left: 2,
        blocked_until: None,
    };
    assert_eq!(b.take(t0, interval), Some(t0));
    assert_eq!(b.take(t0, interval), Some(t0 + interval));
    assert_eq!(b.take(t0, interval), None, "the batch is used up");

    let mut b = Batch {
        next: Some(t0),
        left: 3,
        blocked_until: None,
    };
    // Within a tenth of the interval, a slot is still on time.
    assert_eq!(late_limit(interval), Duration::from_millis(10));
    assert_eq!(b.take(t0 + interval / 10, interval), Some(t0));
    // The next one (at t0 + 100 ms) is past by more than that: dropped; the one
    // after it (t0 + 200 ms) is still ahead.
    assert_eq!(
        b.take(
            t0 + interval + interval / 10 + Duration::from_millis(1),
            interval
        ),
        Some(t0 + 2 * interval)
    );
    assert_eq!(b.left, 0);
    assert_eq!(b.take(t0, interval), None);
    let mut b = Batch {
        next: Some(t0),
        left: 2,
        blocked_until: None,
    };
    assert_eq!(b.take(t0 + 5 * interval, interval), None, "all past");
    assert_eq!(b.left, 0);
}

#[test]
fn a_fast_systems_slot_reached_a_few_milliseconds_late_is_used() {
    // 1,000/s: slots 1.1 ms apart. A wake-up 3 ms late (a timer tick and a busy
    // core) still sends: a tenth of the interval as the bound dropped every slot.
    let interval = Duration::from_micros(1100);
    let t0 = Instant::now();
    let late = t0 + LATE_FLOOR;
    assert!(on_time(t0, late, interval));
    let mut b = Batch {
        next: Some(t0),
        left: 4,
        blocked_until: None,
    };
    assert_eq!(b.take(late, interval), Some(t0));
    // Beyond it, never: sent then, it could make one too many in a second.
    assert!(!on_time(t0, late + Duration::from_millis(1), interval));
    // However slow the rate, a quarter of the headroom at most.
    let slow = Duration::from_secs(11);
    assert!(on_time(t0, t0 + LATE_CEILING, slow));
    assert!(!on_time(
        t0,
        t0 + LATE_CEILING + Duration::from_millis(1),
        slow
    ));
}
