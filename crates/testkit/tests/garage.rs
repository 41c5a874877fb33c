//! The harness itself: Garage starts, answers S3 requests, stops, restarts.

#![allow(clippy::unwrap_used)]

use lifeboat_testkit::garage::Garage;

#[test]
fn garage_starts_stops_and_restarts_on_the_same_port() {
    let mut g = Garage::start().expect("start garage");
    assert!(g.is_running());
    let answer = g.probe().expect("garage answers S3 requests");
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "anonymous access is denied: {answer}"
    );
    g.stop();
    assert!(!g.is_running());
    assert!(g.probe().is_none(), "a stopped server does not answer");
    g.restart().expect("restart garage");
    assert!(g
        .probe()
        .expect("answers after restart")
        .starts_with("HTTP/1.1 403"));
}
