//! The CRI container log format and kubelet's rules for reading it.
//!
//! containerd writes each chunk a container prints as one line,
//! `<RFC3339Nano> <stdout|stderr> <P|F>[:<more tags>] <message>\n`, where `P` marks a partial
//! line (the container's line was longer than the runtime's buffer, or it has not printed the
//! newline yet) that continues in the next record and `F` ends the container's line. Kubelet
//! joins partials back, prefixes every *container* line (not every record) with its timestamp
//! when asked, and counts `tailLines` in container lines; this module does the same so
//! `kubectl logs` prints what it prints against a real kubelet.
//!
//! Pure functions over bytes and `Read + Seek`, so every rule is unit-tested without a server.

use std::io::{self, Read, Seek, SeekFrom};

use jiff::Timestamp;

/// Which of the container's output streams a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One record of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The timestamp exactly as the runtime wrote it (RFC3339Nano, UTC); echoed verbatim with
    /// `timestamps=true`, which is what kubelet's re-formatting of the same instant produces.
    pub timestamp: &'a str,
    pub stream: Stream,
    /// `P`: the container's line continues in the next record.
    pub partial: bool,
    /// The text, without the record's newline.
    pub message: &'a [u8],
}

impl Entry<'_> {
    /// The record's time. Parsed only on demand (`since` filtering): it is the most expensive
    /// part of a record and most reads never need it.
    pub fn time(&self) -> Result<Timestamp, ParseError> {
        self.timestamp
            .parse::<Timestamp>()
            .map_err(|_| ParseError("timestamp is not RFC3339"))
    }
}

/// A record that is not in the CRI format.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed CRI log record: {0}")]
pub struct ParseError(&'static str);

/// Splits `s` at the first space: (before, after).
fn field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

/// Parses one record; a trailing `\n` is allowed and not part of the message.
pub fn parse(record: &[u8]) -> Result<Entry<'_>, ParseError> {
    let record = record.strip_suffix(b"\n").unwrap_or(record);
    let (ts, rest) = field(record).ok_or(ParseError("no timestamp"))?;
    let timestamp = std::str::from_utf8(ts).map_err(|_| ParseError("timestamp is not UTF-8"))?;
    let (stream, rest) = field(rest).ok_or(ParseError("no stream"))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(ParseError("unknown stream")),
    };
    // An empty message may be written without the separating space.
    let (tags, message) = field(rest).unwrap_or((rest, &[]));
    let first_tag = tags.split(|&b| b == b':').next().unwrap_or_default();
    let partial = match first_tag {
        b"P" => true,
        b"F" => false,
        _ => return Err(ParseError("unknown tag")),
    };
    Ok(Entry {
        timestamp,
        stream,
        partial,
        message,
    })
}

/// Whether a record ends a container line. Records that do not parse count as ending one, so a
/// damaged record cannot glue the lines around it together in `tailLines` arithmetic.
fn ends_line(record: &[u8]) -> bool {
    parse(record).map(|e| !e.partial).unwrap_or(true)
}

/// One step of [`tail_start`]'s backward walk over the record ending at `record_end`: if it
/// ends a container line, the line after it, `[record_end, boundary)`, is complete. Returns
/// the start offset once `n` lines have been counted.
fn count_line(
    record: &[u8],
    record_end: u64,
    boundary: &mut u64,
    counted: &mut u64,
    n: u64,
) -> Option<u64> {
    if !ends_line(record) {
        return None;
    }
    if record_end < *boundary {
        *counted += 1;
        if *counted == n {
            return Some(record_end);
        }
    }
    *boundary = record_end;
    None
}

/// How much of the file is read per step when searching backwards.
const TAIL_CHUNK: usize = 64 * 1024;

/// The offset at which the last `n` container lines of a CRI log start, found by reading the
/// file backwards in chunks: a `--tail=10` of a 1 GiB log reads only its end.
///
/// `len` is the file length to consider. A trailing record without its newline (the runtime is
/// mid-write) is not counted; a trailing run of `P` records without their `F` counts as a line.
/// With `n == 0` the answer is the end of the last complete record, where a follower starts.
pub fn tail_start<R: Read + Seek>(file: &mut R, len: u64, n: u64) -> io::Result<u64> {
    // `pending` holds the bytes [pos, pos + pending.len()) not yet split into records.
    let mut pos = len;
    let mut pending: Vec<u8> = Vec::new();
    // The end of the last complete record is found first.
    let mut end: Option<u64> = None;
    // The start of the newest container line counted so far (initially: the end).
    let mut boundary = 0u64;
    let mut counted = 0u64;
    loop {
        // Split off complete records from the back of `pending`.
        loop {
            if end.is_none() {
                match pending.iter().rposition(|&b| b == b'\n') {
                    Some(i) => {
                        let e = pos + i as u64 + 1;
                        end = Some(e);
                        boundary = e;
                        if n == 0 {
                            return Ok(e);
                        }
                        pending.truncate(i + 1);
                    }
                    None => break,
                }
            }
            // `pending` now ends with a record's newline; find where that record starts.
            let Some((_, body)) = pending.split_last() else {
                break;
            };
            let Some(i) = body.iter().rposition(|&b| b == b'\n') else {
                break;
            };
            let record_end = pos + pending.len() as u64;
            if let Some(found) = count_line(
                &pending[i + 1..],
                record_end,
                &mut boundary,
                &mut counted,
                n,
            ) {
                return Ok(found);
            }
            pending.truncate(i + 1);
        }
        if pos == 0 {
            // What remains is the file's first record (or nothing complete at all).
            if end.is_some() && !pending.is_empty() {
                let record_end = pending.len() as u64;
                if let Some(found) =
                    count_line(&pending, record_end, &mut boundary, &mut counted, n)
                {
                    return Ok(found);
                }
            }
            return Ok(0);
        }
        let step = (TAIL_CHUNK as u64).min(pos);
        pos -= step;
        let mut chunk = vec![0u8; step as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&pending);
        pending = chunk;
    }
}

/// Turns records into what the client sees: partials joined, optional timestamp prefixes,
/// `since` filtering and the `limitBytes` cut, all as kubelet applies them.
#[derive(Debug)]
pub struct Formatter {
    timestamps: bool,
    since: Option<Timestamp>,
    remaining: Option<u64>,
    at_line_start: bool,
}

impl Formatter {
    pub fn new(timestamps: bool, since: Option<Timestamp>, limit_bytes: Option<u64>) -> Self {
        Formatter {
            timestamps,
            since,
            remaining: limit_bytes,
            at_line_start: true,
        }
    }

    /// Appends the output for one record to `out`. Returns `false` once `limitBytes` is used
    /// up: the caller stops reading. Malformed records are skipped, as kubelet does.
    pub fn push(&mut self, record: &[u8], out: &mut Vec<u8>) -> bool {
        if self.remaining == Some(0) {
            return false;
        }
        let Ok(entry) = parse(record) else {
            return true;
        };
        if let Some(since) = self.since {
            // A record whose time does not parse cannot be placed: skipped, as kubelet skips
            // records it cannot parse.
            if entry.time().map_or(true, |t| t < since) {
                return true;
            }
        }
        let start = out.len();
        if self.timestamps && self.at_line_start {
            out.extend_from_slice(entry.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(entry.message);
        if !entry.partial {
            out.push(b'\n');
        }
        self.at_line_start = !entry.partial;
        if let Some(remaining) = &mut self.remaining {
            let written = (out.len() - start) as u64;
            if written >= *remaining {
                out.truncate(start + *remaining as usize);
                *remaining = 0;
                return false;
            }
            *remaining -= written;
        }
        true
    }
}

/// `PodLogOptions` as kubelet's `/containerLogs` takes them from the query string.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<u64>,
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    pub previous: bool,
    pub limit_bytes: Option<u64>,
}

/// apimachinery's boolean rule: absent → false; `0` or `false` in any case → false; anything
/// else (an empty value, `True`) → true.
fn flag(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

fn int(name: &str, v: &str) -> Result<i64, String> {
    v.parse()
        .map_err(|_| format!("invalid value {v:?} for {name}: not an integer"))
}

impl LogOptions {
    /// Parses and validates the query parameters (upstream's `ValidatePodLogOptions` rules).
    /// `now` anchors `sinceSeconds`. The error is the message for a 400 answer.
    pub fn from_query(params: &[(String, String)], now: Timestamp) -> Result<Self, String> {
        let mut o = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (k, v) in params {
            match k.as_str() {
                "follow" => o.follow = flag(v),
                "timestamps" => o.timestamps = flag(v),
                "previous" => o.previous = flag(v),
                // kubelet's legacy `tail`, where `all` means no limit.
                "tail" if v == "all" => o.tail_lines = None,
                "tailLines" | "tail" if v.is_empty() => {}
                "tailLines" | "tail" => {
                    let n = int("tailLines", v)?;
                    o.tail_lines = Some(u64::try_from(n).map_err(|_| {
                        format!("tailLines: Invalid value: {n}: must be greater than or equal to 0")
                    })?);
                }
                "limitBytes" if v.is_empty() => {}
                "limitBytes" => {
                    let n = int("limitBytes", v)?;
                    if n < 1 {
                        return Err(format!(
                            "limitBytes: Invalid value: {n}: must be greater than 0"
                        ));
                    }
                    o.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" if v.is_empty() => {}
                "sinceSeconds" => {
                    let n = int("sinceSeconds", v)?;
                    if n < 1 {
                        return Err(format!(
                            "sinceSeconds: Invalid value: {n}: must be greater than 0"
                        ));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" if v.is_empty() => {}
                "sinceTime" => {
                    since_time = Some(v.parse::<Timestamp>().map_err(|_| {
                        format!("invalid value {v:?} for sinceTime: not an RFC3339 time")
                    })?);
                }
                _ => {}
            }
        }
        o.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into())
            }
            (Some(s), None) => Some(
                now.checked_sub(jiff::SignedDuration::from_secs(s))
                    .unwrap_or(Timestamp::MIN),
            ),
            (None, t) => t,
        };
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn rec(ts: &str, tag: &str, msg: &str) -> String {
        format!("2026-11-29T03:40:{ts}Z stdout {tag} {msg}\n")
    }

    fn render(file: &str, fmt: &mut Formatter) -> String {
        let mut out = Vec::new();
        for line in file.split_inclusive('\n') {
            if !fmt.push(line.as_bytes(), &mut out) {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn tail(file: &str, n: u64) -> String {
        let mut c = Cursor::new(file.as_bytes().to_vec());
        let start = tail_start(&mut c, file.len() as u64, n).unwrap();
        file[start as usize..].to_string()
    }

    #[test]
    fn parses_records() {
        let e = parse(b"2026-11-29T03:40:24.794434832Z stderr F hello world\n").unwrap();
        assert_eq!(e.timestamp, "2026-11-29T03:40:24.794434832Z");
        assert_eq!(e.stream, Stream::Stderr);
        assert!(!e.partial);
        assert_eq!(e.message, b"hello world");
        let e = parse(b"2026-11-29T03:40:24Z stdout P:x  two spaces").unwrap();
        assert!(e.partial);
        assert_eq!(e.message, b" two spaces");
        assert_eq!(
            parse(b"2026-11-29T03:40:24Z stdout F").unwrap().message,
            b""
        );
        assert_eq!(
            parse(b"2026-11-29T03:40:24Z stdout F \n").unwrap().message,
            b""
        );
        for bad in [
            &b"garbage"[..],
            b"2026-11-29T03:40:24Z stdin F x",
            b"2026-11-29T03:40:24Z stdout X x",
            b"2026-11-29T03:40:24Z",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn joins_partials_and_prefixes_each_line_once() {
        let file = [
            rec("01", "P", "hel"),
            rec("02", "F", "lo"),
            rec("03", "F", "world"),
        ]
        .concat();
        assert_eq!(
            render(&file, &mut Formatter::new(false, None, None)),
            "hello\nworld\n"
        );
        assert_eq!(
            render(&file, &mut Formatter::new(true, None, None)),
            "2026-11-29T03:40:01Z hello\n2026-11-29T03:40:03Z world\n"
        );
    }

    #[test]
    fn a_record_without_a_valid_time_is_skipped_only_when_filtering_by_time() {
        let file = "notatime stdout F x\n";
        assert_eq!(render(file, &mut Formatter::new(false, None, None)), "x\n");
        let since: Timestamp = "2026-11-29T03:40:03Z".parse().unwrap();
        assert_eq!(
            render(file, &mut Formatter::new(false, Some(since), None)),
            ""
        );
        assert!(parse(b"notatime stdout F x").unwrap().time().is_err());
    }

    #[test]
    fn skips_malformed_records() {
        let file = [rec("01", "F", "a"), "junk\n".into(), rec("02", "F", "b")].concat();
        assert_eq!(
            render(&file, &mut Formatter::new(false, None, None)),
            "a\nb\n"
        );
    }

    #[test]
    fn since_filters_by_record_time() {
        let file = [rec("01", "F", "old"), rec("05", "F", "new")].concat();
        let since: Timestamp = "2026-11-29T03:40:03Z".parse().unwrap();
        assert_eq!(
            render(&file, &mut Formatter::new(false, Some(since), None)),
            "new\n"
        );
    }

    #[test]
    fn limit_bytes_cuts_mid_line_and_stops() {
        let file = [rec("01", "F", "abcdef"), rec("02", "F", "ghi")].concat();
        let mut f = Formatter::new(false, None, Some(9));
        assert_eq!(render(&file, &mut f), "abcdef\ngh");
        let mut out = Vec::new();
        assert!(!f.push(rec("03", "F", "more").as_bytes(), &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn tail_counts_container_lines() {
        let file = [
            rec("01", "F", "one"),
            rec("02", "P", "tw"),
            rec("03", "F", "o"),
            rec("04", "F", "three"),
        ]
        .concat();
        assert_eq!(tail(&file, 1), rec("04", "F", "three"));
        assert_eq!(
            tail(&file, 2),
            [
                rec("02", "P", "tw"),
                rec("03", "F", "o"),
                rec("04", "F", "three")
            ]
            .concat()
        );
        assert_eq!(tail(&file, 3), file);
        assert_eq!(tail(&file, 100), file);
        assert_eq!(tail(&file, 0), "");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn tail_ignores_a_record_being_written_and_counts_trailing_partials() {
        let done = [rec("01", "F", "one"), rec("02", "F", "two")].concat();
        let writing = format!("{done}2026-11-29T03:40:03Z stdout F thr");
        assert_eq!(
            tail(&writing, 1),
            format!("{}2026-11-29T03:40:03Z stdout F thr", rec("02", "F", "two"))
        );
        assert_eq!(tail(&writing, 0), "2026-11-29T03:40:03Z stdout F thr");
        let open_line = [done.clone(), rec("03", "P", "par"), rec("04", "P", "tial")].concat();
        assert_eq!(
            tail(&open_line, 1),
            [rec("03", "P", "par"), rec("04", "P", "tial")].concat()
        );
        assert_eq!(
            tail(&open_line, 2),
            [
                rec("02", "F", "two"),
                rec("03", "P", "par"),
                rec("04", "P", "tial")
            ]
            .concat()
        );
    }

    #[test]
    fn tail_reads_large_files_in_chunks() {
        // Lines straddle chunk boundaries and the file is many chunks long.
        let mut file = String::new();
        for i in 0..20_000 {
            file.push_str(&rec("01", "F", &format!("line {i} {}", "x".repeat(i % 97))));
        }
        assert!(file.len() > 10 * TAIL_CHUNK);
        let out = tail(&file, 3);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains(" line 19997 "), "{}", lines[0]);
        assert!(lines[2].contains(" line 19999 "), "{}", lines[2]);
        let out = tail(&file, 15_000);
        assert_eq!(out.lines().count(), 15_000);
        assert!(out.starts_with(&rec(
            "01",
            "F",
            &format!("line 5000 {}", "x".repeat(5000 % 97))
        )));
    }

    #[test]
    fn options_from_query() {
        let now: Timestamp = "2026-11-29T04:00:00Z".parse().unwrap();
        let q = |s: &[(&str, &str)]| {
            let v: Vec<(String, String)> = s
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LogOptions::from_query(&v, now)
        };
        let o = q(&[
            ("follow", "true"),
            ("tailLines", "2"),
            ("timestamps", "1"),
            ("previous", "False"),
            ("sinceSeconds", "60"),
            ("limitBytes", "10"),
        ])
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(2));
        assert_eq!(o.limit_bytes, Some(10));
        assert_eq!(o.since, Some("2026-11-29T03:59:00Z".parse().unwrap()));
        let o = q(&[("sinceTime", "2026-11-29T03:00:00Z"), ("tail", "all")]).unwrap();
        assert_eq!(o.since, Some("2026-11-29T03:00:00Z".parse().unwrap()));
        assert_eq!(o.tail_lines, None);
        assert!(q(&[("tailLines", "-1")])
            .unwrap_err()
            .contains("greater than or equal to 0"));
        assert!(q(&[("tailLines", "x")]).is_err());
        assert!(q(&[("limitBytes", "0")]).is_err());
        assert!(q(&[("sinceSeconds", "0")]).is_err());
        assert!(q(&[("sinceTime", "yesterday")]).is_err());
        assert!(q(&[("sinceSeconds", "1"), ("sinceTime", "2026-11-29T03:00:00Z")]).is_err());
    }
}
