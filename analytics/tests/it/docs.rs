//! The rule reference (`docs/analytics.md`) stays true: every SQL example
//! in it compiles, and every JSON rule and operator in it is valid.

use plantd_analytics::Rule;

fn blocks(lang: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/analytics.md"))
            .expect("docs/analytics.md");
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(&fence) {
        let body = &rest[at + fence.len()..];
        let end = body.find("```").expect("closed block");
        out.push(body[..end].to_owned());
        rest = &body[end..];
    }
    out
}

#[test]
fn every_sql_example_compiles() {
    let mut n = 0;
    for block in blocks("sql") {
        let text: String = block
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for stmt in text.split("SELECT ").filter(|s| !s.trim().is_empty()) {
            let sql = format!("SELECT {stmt}");
            Rule::from_sql("doc", &sql).unwrap_or_else(|e| panic!("{sql}\n{e}"));
            n += 1;
        }
    }
    assert!(n >= 12, "{n} examples");
}

#[test]
fn every_json_rule_and_operator_is_valid() {
    let mut n = 0;
    for block in blocks("json") {
        let head = block.trim_start();
        if block.contains('…') || head.starts_with("{ \"rule\"") {
            continue; // the outline and the result
        }
        // An operator alone: in a rule of its own.
        let rule = match head.strip_prefix("{\"operator\"") {
            Some(rest) => format!("{{\"name\": \"doc\", \"from\": \"#\", \"operator\"{rest}"),
            None => block.clone(),
        };
        Rule::from_json(rule.as_bytes()).unwrap_or_else(|e| panic!("{rule}\n{e}"));
        n += 1;
    }
    assert!(n >= 8, "{n} rules");
}
