//! The README and the book in `docs/` (an mdBook, sources in `docs/src/`): every relative
//! link resolves to a file and every `#anchor` to a heading of its target; every chapter
//! is in `SUMMARY.md` and every entry of `SUMMARY.md` is a chapter; the README's test
//! command is the one `.ci/run` runs; and the book builds with `mdbook`.

use std::collections::{BTreeSet, HashSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::Context;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn book_src() -> PathBuf {
    root().join("docs/src")
}

/// A path with its `.` and `..` taken out, without asking the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A path as the failure messages name it: from the workspace's root when it is inside.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every `.md` file under `dir`, sorted.
fn markdown_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A document as it is rendered: a page of the book (under `book`) with each
/// `{{#include path}}` line replaced by the file it names, relative to the page, as
/// mdBook does; any other document as it is.
fn read_rendered(path: &Path, book: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    if !path.starts_with(book) {
        return Ok(text);
    }
    let mut out = String::new();
    for line in text.lines() {
        let include = line
            .trim()
            .strip_prefix("{{#include ")
            .and_then(|l| l.strip_suffix("}}"));
        match include {
            Some(named) => {
                let file = named.trim().split(':').next().unwrap_or_default();
                let file = path.parent().unwrap_or(book).join(file);
                let included = std::fs::read_to_string(&file)
                    .with_context(|| format!("{}: {{{{#include {named}}}}}", shown(path)))?;
                out.push_str(&included);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

/// The lines of a markdown text outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let start = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| start.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => lines.push((i + 1, line)),
            _ => {}
        }
    }
    lines
}

/// A line with its code spans taken out: a link written inside backticks is code.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        match after.find(&"`".repeat(ticks)) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                out.push_str(&rest[start..]);
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of a line's inline links and images, `[text](target "title")`, and of a
/// reference definition, `[label]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut targets = Vec::new();
    if let Some((label, definition)) = line
        .trim_start()
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]:"))
        && !label.contains(['[', ']', '('])
    {
        targets.extend(definition.split_whitespace().next().map(str::to_owned));
    }
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let tail = &rest[at + 2..];
        let end = tail.find(')').unwrap_or(tail.len());
        let target = tail[..end].split_whitespace().next().unwrap_or_default();
        let target = target
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(target);
        targets.push(target.to_owned());
        rest = &tail[end..];
    }
    targets
}

/// The id mdBook gives a heading (mdbook-html's `id_from_content`): the heading's text
/// as rendered (a link's target dropped), trimmed, lowercase; letters, digits, `_` and
/// `-` kept, each space a `-`, any other character dropped. GitHub's ids for the README
/// follow the same rule.
fn heading_id(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    while let Some(at) = rest.find("](") {
        text.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        rest = tail.find(')').map_or("", |end| &tail[end + 1..]);
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The ids of a text's ATX headings, a repeated one numbered `-1`, `-2`… as mdBook does.
fn anchors(text: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for (_, line) in prose(text) {
        let level = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&level) || !line[level..].starts_with([' ', '\t']) {
            continue;
        }
        let id = heading_id(line[level..].trim().trim_end_matches('#'));
        let mut unique = id.clone();
        let mut n = 0;
        while !ids.insert(unique.clone()) {
            n += 1;
            unique = format!("{id}-{n}");
        }
    }
    ids
}

/// Every broken relative link of `documents`, as `file:line: target: why`. Pages under
/// `book` are read as mdBook renders them, and may not link a markdown file outside the
/// book: mdBook turns such a link into one to an `.html` page the book does not have.
fn broken_links(documents: &[PathBuf], book: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for document in documents {
        let text = read_rendered(document, book)?;
        let dir = document.parent().unwrap_or(book);
        for (n, line) in prose(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let here = format!("{}:{n}: ({target})", shown(document));
                let (file, anchor) = match target.split_once('#') {
                    Some((file, anchor)) => (file, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let path = if file.is_empty() {
                    document.clone()
                } else {
                    normalize(&dir.join(file))
                };
                if !path.exists() {
                    problems.push(format!("{here}: no such file ({})", shown(&path)));
                    continue;
                }
                let markdown = path.extension().is_some_and(|e| e == "md");
                if document.starts_with(book) && markdown && !path.starts_with(book) {
                    problems.push(format!(
                        "{here}: a markdown file outside the book, which mdBook links as \
                         .html; link its chapter instead"
                    ));
                }
                let Some(anchor) = anchor else { continue };
                if !markdown {
                    problems.push(format!(
                        "{here}: an anchor into a file that is not markdown"
                    ));
                } else if !anchors(&read_rendered(&path, book)?).contains(anchor) {
                    problems.push(format!(
                        "{here}: {} has no heading whose id is {anchor:?}",
                        shown(&path)
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// The chapters `SUMMARY.md` lists, and what is wrong with it: an entry with no file
/// (mdBook would write an empty one) or a file under the book's sources it does not list.
fn summary(book: &Path) -> anyhow::Result<(Vec<PathBuf>, Vec<String>)> {
    let file = book.join("SUMMARY.md");
    let text = std::fs::read_to_string(&file).with_context(|| format!("read {}", shown(&file)))?;
    let mut chapters = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in prose(&text) {
        for target in link_targets(line) {
            let here = format!("{}:{n}: ({target})", shown(&file));
            if target.is_empty() {
                problems.push(format!("{here}: a chapter with no file"));
                continue;
            }
            let chapter = normalize(&book.join(&target));
            if !chapter.is_file() {
                problems.push(format!("{here}: no such chapter"));
            }
            chapters.push(chapter);
        }
    }
    let listed: BTreeSet<&PathBuf> = chapters.iter().collect();
    for page in markdown_under(book)? {
        if page != file && !listed.contains(&page) {
            problems.push(format!("{}: not listed in SUMMARY.md", shown(&page)));
        }
    }
    Ok((chapters, problems))
}

#[test]
fn every_link_of_the_readme_and_the_book_resolves() -> anyhow::Result<()> {
    let book = book_src();
    let mut documents = vec![root().join("README.md")];
    documents.extend(markdown_under(&book)?);
    assert!(
        documents.len() > 10,
        "the book has its chapters: {documents:?}"
    );
    let problems = broken_links(&documents, &book)?;
    anyhow::ensure!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
    Ok(())
}

#[test]
fn every_chapter_is_in_the_summary_and_every_entry_is_a_chapter() -> anyhow::Result<()> {
    let (chapters, problems) = summary(&book_src())?;
    anyhow::ensure!(problems.is_empty(), "SUMMARY.md:\n{}", problems.join("\n"));
    assert!(chapters.len() > 10, "{chapters:?}");
    Ok(())
}

/// The checks themselves, on a book of two pages with one good link and three bad ones.
#[test]
fn the_link_check_names_a_missing_file_a_missing_heading_and_a_page_outside_the_book()
-> anyhow::Result<()> {
    assert_eq!(
        heading_id("Observability and deployment files (`deploy/`)"),
        "observability-and-deployment-files-deploy"
    );
    assert_eq!(heading_id("`sync-rules.json`"), "sync-rulesjson");
    assert_eq!(
        heading_id("The sandbox's helpdesk dialects"),
        "the-sandboxs-helpdesk-dialects"
    );
    assert_eq!(
        heading_id("See [the runbook](runbook.md)"),
        "see-the-runbook"
    );
    let ids = anchors("# A\n\n```\n# not a heading\n```\n## Notes\n## Notes\n");
    assert_eq!(
        ids,
        HashSet::from(["a".into(), "notes".into(), "notes-1".into()])
    );

    let dir = std::env::temp_dir().join(format!("recordsync-docs-{}", uuid::Uuid::new_v4()));
    let book = dir.join("docs/src");
    std::fs::create_dir_all(&book)?;
    std::fs::write(dir.join("NOTES.md"), "# Notes\n")?;
    std::fs::write(
        book.join("a.md"),
        "# A\n\n[good](b.md#second-part) `[code](gone.md)`\n\
         [gone](gone.md) and [no heading](b.md#third)\n\n[outside](../../NOTES.md)\n",
    )?;
    std::fs::write(book.join("b.md"), "# B\n\n## Second part\n")?;
    let problems = broken_links(&markdown_under(&book)?, &book);
    std::fs::remove_dir_all(&dir)?;
    let problems = problems?;
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].contains("a.md:4: (gone.md): no such file"),
        "{problems:#?}"
    );
    assert!(problems[1].contains("(b.md#third)") && problems[1].contains("\"third\""));
    assert!(problems[2].contains("(../../NOTES.md): a markdown file outside the book"));
    Ok(())
}

/// `.ci/run` runs the test command the README gives (with `--locked` after it).
#[test]
fn the_readme_test_command_is_the_one_ci_runs() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(root().join("README.md"))?;
    let command = readme
        .lines()
        .find_map(|l| l.strip_prefix("cargo test"))
        .map(|rest| format!("cargo test{}", rest.split('#').next().unwrap_or_default()))
        .context("the README gives a `cargo test` command")?;
    let command = command.trim();
    assert_eq!(command, "cargo test --workspace");
    let ci = std::fs::read_to_string(root().join(".ci/run"))?;
    assert!(
        ci.lines().any(|l| l.trim_start().starts_with(command)),
        ".ci/run does not run {command:?}"
    );
    Ok(())
}

/// The `mdbook` binary: cargo's (where `tests/setup.sh` installs it), else one on the
/// PATH; `None` when neither answers `--version`.
fn mdbook() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    cargo_home
        .map(|home| home.join("bin/mdbook"))
        .into_iter()
        .chain([PathBuf::from("mdbook")])
        .find(|bin| {
            Command::new(bin)
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success())
        })
}

/// `mdbook build docs` succeeds, logs no warning or error (it logs a failed include and
/// goes on), and writes a page for every chapter. Without mdbook, `tests/setup.sh`
/// installs it (a few minutes); if it is still missing, the test fails in CI (`CI=true`)
/// and is skipped elsewhere, saying so.
#[test]
fn the_book_builds_with_mdbook() -> anyhow::Result<()> {
    let bin = match mdbook() {
        Some(bin) => bin,
        None => {
            let installed = tests::tools();
            match (mdbook(), installed) {
                (Some(bin), _) => bin,
                (None, installed) => {
                    let why = installed
                        .err()
                        .map(|e| format!(": {e:#}"))
                        .unwrap_or_default();
                    let message = format!("no mdbook, and tests/setup.sh did not install it{why}");
                    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                        anyhow::bail!(message);
                    }
                    eprintln!("skipped, outside CI: {message}");
                    return Ok(());
                }
            }
        }
    };
    let out_dir = std::env::temp_dir().join(format!("recordsync-book-{}", uuid::Uuid::new_v4()));
    let out = Command::new(&bin)
        .current_dir(root())
        .args(["build", "docs", "--dest-dir"])
        .arg(&out_dir)
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pages: Vec<PathBuf> = summary(&book_src())?
        .0
        .iter()
        .map(|chapter| {
            let page = chapter.strip_prefix(book_src()).unwrap_or(chapter);
            out_dir.join(page).with_extension("html")
        })
        .collect();
    let missing: Vec<&PathBuf> = pages.iter().filter(|page| !page.is_file()).collect();
    let index = out_dir.join("index.html").is_file();
    std::fs::remove_dir_all(&out_dir).ok();
    anyhow::ensure!(out.status.success(), "mdbook build docs failed:\n{log}");
    anyhow::ensure!(
        !log.contains("ERROR") && !log.contains("WARN"),
        "mdbook build docs logged a problem:\n{log}"
    );
    anyhow::ensure!(
        index && missing.is_empty(),
        "mdbook wrote no index.html ({index}) or not these pages: {missing:?}\n{log}"
    );
    Ok(())
}
