//! Link relations (RFC 8030 §4, docs/protocol.md §4) and `Link` header values.

/// The push resource of a subscription.
pub const REL_PUSH: &str = "urn:ietf:params:push";
/// The receipt subscribe resource.
pub const REL_RECEIPT: &str = "urn:ietf:params:push:receipt";
/// The subscription set.
pub const REL_SET: &str = "urn:ietf:params:push:set";
/// The list registration service of the subscription's partition.
pub const REL_MULTI: &str = "urn:ietf:params:push:multi";
/// The next page of a paged list read.
pub const REL_NEXT: &str = "next";

/// One `Link` header value: `<uri>; rel="rel"`.
pub fn link(uri: &str, rel: &str) -> String {
    format!("<{uri}>; rel=\"{rel}\"")
}

/// The `(uri, rel)` pairs of one or more `Link` header values, in order.
/// A link with several relation types (`rel="a b"`) yields one pair each.
/// Both borrow from `value`, so that a long URI with many relation types
/// costs no copy per pair.
pub fn parse(value: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let Some(end) = rest[start..].find('>') else {
            break;
        };
        let uri = &rest[start + 1..start + end];
        rest = &rest[start + end + 1..];
        // Parameters run up to the next link (a ',' outside quotes) or the end.
        let mut in_quotes = false;
        let stop = rest
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    in_quotes = !in_quotes;
                }
                c == ',' && !in_quotes
            })
            .map_or(rest.len(), |(i, _)| i);
        for p in rest[..stop].split(';') {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("rel") {
                    for r in v.trim().trim_matches('"').split_ascii_whitespace() {
                        out.push((uri, r));
                    }
                }
            }
        }
        rest = &rest[stop..];
    }
    out
}

/// The target of the first link with relation `rel` among header values.
pub fn find<'a, I: IntoIterator<Item = &'a str>>(values: I, rel: &str) -> Option<String> {
    values
        .into_iter()
        .flat_map(parse)
        .find(|&(_, r)| r == rel)
        .map(|(u, _)| u.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = format!(
            "{}, {}",
            link("/p/abc", REL_PUSH),
            link("https://x/l?a=1,2", REL_MULTI)
        );
        assert_eq!(
            parse(&v),
            vec![("/p/abc", REL_PUSH), ("https://x/l?a=1,2", REL_MULTI)]
        );
        assert_eq!(find([v.as_str()], REL_MULTI).unwrap(), "https://x/l?a=1,2");
        assert_eq!(
            parse(r#"</a>; title="x, y"; rel="next prev""#),
            vec![("/a", "next"), ("/a", "prev")]
        );
        assert!(parse("garbage <").is_empty());
    }
}
