//! W3C trace context in AMQP headers: a command's `traceparent` carries its trace from
//! the webhook ingest accepted to the worker's step and the requests it makes, so that
//! one trace shows the whole way.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// The header, as W3C Trace Context names it.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of the span current in `cx`, when it is a real (sampled or not)
/// span: `00-<trace id>-<span id>-<flags>`.
pub fn traceparent(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The span context a `traceparent` names, if it is well formed (version 00).
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00"
        || parts.next().is_some()
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// The context a command's step continues: the remote span its `traceparent` names,
/// or a new root when there is none (an older message, a tool's publish).
pub fn remote_parent(traceparent: Option<&str>) -> Context {
    match traceparent.and_then(parse) {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_goes_out_and_comes_back_the_same() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse(text).expect("a valid traceparent");
        assert_eq!(
            format!("{:032x}", sc.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_remote() && sc.is_sampled());
        let cx = remote_parent(Some(text));
        assert_eq!(traceparent(&cx).as_deref(), Some(text));
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
            assert!(traceparent(&remote_parent(Some(bad))).is_none(), "{bad}");
        }
        assert!(traceparent(&remote_parent(None)).is_none());
    }
}
