//! `oomwatch watch`: the daemon's OOM episodes as they happen, read from its
//! `/events` stream, with the prediction beside each kill.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::model::printable;

/// Connects to the daemon at `from` and prints every episode until the
/// daemon stops (an error) or the output is closed.
pub fn watch(from: SocketAddr, json: bool) -> anyhow::Result<()> {
    let stream = TcpStream::connect_timeout(&from, Duration::from_secs(5)).with_context(|| {
        format!(
            "no oomwatch daemon at {from}: start one with `oomwatch run`, or point --from at \
             its --listen address"
        )
    })?;
    let mut w = stream.try_clone().context("clone the connection")?;
    // HTTP/1.0: the body is the stream itself, until the daemon closes it.
    write!(w, "GET /events HTTP/1.0\r\nHost: {from}\r\n\r\n").context("send the request")?;
    let mut r = BufReader::new(stream);
    let mut status = String::new();
    r.read_line(&mut status).context("read the response")?;
    if status.starts_with("HTTP/1.") && status.contains(" 503") {
        // The daemon's reader cap: its body says so in one line.
        let mut reason = String::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
        }
        let _ = r.read_line(&mut reason);
        bail!(
            "{from} refused GET /events ({}): {}",
            status.trim(),
            crate::model::printable(reason.trim())
        );
    }
    if !status.starts_with("HTTP/1.") || !status.contains(" 200") {
        bail!(
            "{from} answered {:?} to GET /events: is it an oomwatch daemon of this version?",
            status.trim()
        );
    }
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).context("read the response headers")? == 0 {
            bail!("{from} closed the connection before any event");
        }
        if h.trim().is_empty() {
            break;
        }
    }
    if !json {
        eprintln!("watching OOM episodes from {from} (Ctrl-C quits)");
    }
    let mut out = std::io::stdout().lock();
    for line in r.lines() {
        let line = line.context("read the event stream")?;
        if line.trim().is_empty() {
            continue;
        }
        let text = if json {
            line
        } else {
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => describe(&v),
                Err(_) => format!("(unreadable event: {line})"),
            }
        };
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    bail!("the daemon at {from} stopped")
}

/// One episode as a few human lines: the kill, its trigger and constraint,
/// the prediction made before it, the replay, the kernel's own points.
pub fn describe(ep: &Value) -> String {
    if let Some(n) = ep["lost"].as_u64() {
        return format!("({n} episodes lost: this reader fell behind)");
    }
    // The daemon's strings carry task names and paths: escaped for the
    // terminal.
    let s = |v: &Value| match v {
        Value::String(s) => printable(s).into_owned(),
        Value::Null => "?".into(),
        other => other.to_string(),
    };
    let v = &ep["victim"];
    let mut out = format!(
        "{} OOM kill pid={} comm={} memcg={}",
        utc_now(),
        s(&v["pid"]),
        s(&v["comm"]),
        printable(v["memcg"]["path"].as_str().unwrap_or("?"))
    );
    if let Some(c) = ep["oom_kill"]["constraint"].as_str() {
        out += &format!(" constraint={}", printable(c));
    }
    let t = &ep["trigger"];
    if !t.is_null() {
        out += &format!(
            " trigger={} gfp={} order={}{}",
            s(&t["comm"]),
            s(&t["gfp_mask"]),
            s(&t["order"]),
            if t["in_page_fault"] == true {
                " (in a page fault)"
            } else {
                ""
            }
        );
    }
    if let Some(of) = ep["oom_group_of"].as_i64() {
        out += &format!("\n  killed with pid {of} (memory.oom.group)");
        return out;
    }
    let p = &ep["prediction"];
    if !p.is_null() {
        out += &format!("\n  predicted: {} ({})", s(&p["outcome"]), s(&p["reason"]));
    }
    let r = &ep["replay"];
    if r.is_null() {
        out += &format!("\n  replay: none ({})", s(&ep["replay_missing"]));
    } else {
        out += &format!(
            "\n  replay of the kernel's report: {} (model pid={}, kernel pid={}, totalpages={})",
            if r["agree"] == true {
                "agree"
            } else {
                "DISAGREE"
            },
            s(&r["model_pid"]),
            s(&r["kernel_pid"]),
            s(&r["totalpages"])
        );
    }
    let c = &ep["points_check"];
    if !c.is_null() {
        out += &format!(
            "\n  kernel's own points: {} tasks compared, {} equal to the model's",
            s(&c["compared"]),
            s(&c["equal"])
        );
    }
    out
}

/// Now, as `HH:MM:SS` UTC.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}Z", day / 3600, day / 60 % 60, day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_reads_as_kill_prediction_replay() {
        let ep: Value = serde_json::from_str(
            r#"{"victim":{"pid":7,"comm":"hog","memcg":{"path":"/job","version":"v1"}},
                "trigger":{"comm":"hog","gfp_mask":"0xcc0(GFP_KERNEL)","order":0,"in_page_fault":true},
                "oom_kill":{"constraint":"CONSTRAINT_MEMCG"},
                "prediction":{"outcome":"match","reason":"the last pass named this task"},
                "replay":{"agree":true,"model_pid":7,"kernel_pid":7,"totalpages":16384},
                "points_check":null,"oom_group_of":null}"#,
        )
        .unwrap();
        let text = describe(&ep);
        assert!(
            text.contains("OOM kill pid=7 comm=hog memcg=/job constraint=CONSTRAINT_MEMCG trigger=hog gfp=0xcc0(GFP_KERNEL) order=0 (in a page fault)"),
            "{text}"
        );
        assert!(
            text.contains("\n  predicted: match (the last pass named this task)"),
            "{text}"
        );
        assert!(
            text.contains("replay of the kernel's report: agree (model pid=7"),
            "{text}"
        );
        assert_eq!(
            describe(&serde_json::json!({"lost": 3})),
            "(3 episodes lost: this reader fell behind)"
        );
    }

    /// A task name from the daemon reaches the terminal escaped.
    #[test]
    fn names_from_the_daemon_are_escaped() {
        let ep: Value = serde_json::from_str(
            r#"{"victim":{"pid":7,"comm":"\u001b[2J\nfake","memcg":{"path":"/a\u001b[H","version":"v1"}},
                "prediction":{"outcome":"match","reason":"named \u001b[2J"}}"#,
        )
        .unwrap();
        let text = describe(&ep);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(
            text.contains("comm=\\x1b[2J\\x0afake memcg=/a\\x1b[H"),
            "{text}"
        );
        assert!(text.contains("(named \\x1b[2J)"), "{text}");
    }
}
