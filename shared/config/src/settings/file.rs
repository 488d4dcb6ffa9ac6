//! The settings file's format: `NAME=value` lines, as compose's `env_file` reads them.

/// A line of a settings file.
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) value: String,
    pub(super) line: usize,
}

/// Parses a settings file: `NAME=value` lines (an optional `export `, the value
/// optionally in matching quotes), blank lines and `#` comments. Returns each name,
/// value and line number.
pub(super) fn parse_file(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err((i + 1, "not a NAME=value line".into()));
        };
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .filter(|_| value.len() >= 2)
            })
            .unwrap_or(value);
        entries.push(Entry {
            name: name.trim().to_owned(),
            value: value.to_owned(),
            line: i + 1,
        });
    }
    Ok(entries)
}
