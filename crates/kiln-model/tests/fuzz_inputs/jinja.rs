//! Chat templates from fragments and from a small grammar, and messages to render.

use super::*;

/// Pieces of Jinja that HF templates use, and some that they must not get away with.
///
/// Each costs little per step (`'x' * 10`, not `'x' * 100000`): a template is code, and one
/// written to be slow or memory-hungry stays so (`range(99999)|list` in a loop, output captured
/// by `{% filter %}`), in kiln as in transformers. What is bounded is the number of steps (fuel)
/// and the rendered prompt's size; the fuzzing checks those bounds and everything else.
pub const JINJA: &[&str] = &[
    "{% for message in messages %}",
    "{% for m in messages[::-1] %}",
    "{% endfor %}",
    "{% if add_generation_prompt %}",
    "{% if message['role'] == 'user' %}",
    "{% elif loop.first %}",
    "{% else %}",
    "{% endif %}",
    "{{ message['content'] }}",
    "{{ message.role + '\\n' }}",
    "{{ messages[0]['content'].strip() }}",
    "{{ message.content.split('</think>')[-1].lstrip('\\n') }}",
    "{{ message.content.split() | length }}",
    "{{ message.content.rsplit('a', 2) }}",
    "{{ message.content.replace('a', 'b', 3) }}",
    "{{ message.content.find('x') ~ message.content.count('') }}",
    "{{ '-'.join(['a', 'b']) }}",
    "{{ message.content.title() ~ message.content.upper() }}",
    "{{ message.content.startswith(('<', 'a')) }}",
    "{{ message.content.isdigit() and message.content.isspace() }}",
    "{{ message.nope() }}",
    "{{ message.items() | list }}",
    "{{ message.get('role', 1) ~ message.keys() ~ message.values() }}",
    "{% set ns = namespace(n=0) %}",
    "{% set ns.n = ns.n + 1 %}",
    "{{ ns.n }}",
    "{{ raise_exception('bad conversation') }}",
    "{{ strftime_now('%Y-%m-%d %H:%M:%S %A %B %j %') }}",
    "{{ bos_token ~ eos_token }}",
    "{{ messages | tojson(indent=2) }}",
    "{{ tools | tojson(sort_keys=true) }}",
    "{{ messages | tojson(indent=9999999) }}",
    "{% for i in range(100000) %}",
    "{% for i in range(1, 99999999999, 1) %}",
    "{{ 'x' * 10 }}",
    "{{ [1, 2] * 10 }}",
    "{% set s = 'abcdefghij' %}",
    "{% include 'chat_template' %}",
    "{% include '/etc/passwd' %}",
    "{% import 'chat_template' as t %}",
    "{% from '/etc/passwd' import x %}",
    "{% extends 'chat_template' %}",
    "{% block b %}",
    "{% endblock %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}",
    "{{ f(1) }}",
    "{% macro g() %}{{ caller() }}{% endmacro %}",
    "{% call g() %}x{% endcall %}",
    "{% filter upper %}",
    "{% endfilter %}",
    "{% raw %}",
    "{% endraw %}",
    "{%- ",
    " -%}",
    "{{",
    "}}",
    "{#",
    "#}",
    "{%",
    "%}",
    "(",
    ")",
    "[",
    "]",
    "'",
    "\"",
    "|",
    ".",
    "~",
    "\n",
    " ",
    "{{ 10 ** 10 ** 10 }}",
    "{{ 9223372036854775807 + 1 }}",
    "{{ 1 / 0 }}",
    "{{ (1, 2)[5] }}",
    "{{ messages[-99999] }}",
    "{{ messages[1:99999999:0] }}",
    "{{ ''.center(99999999) }}",
    "{{ lipsum(999999) }}",
    "{{ range(9) | list | length }}",
    "{{ message.content | default(x) | indent(9) }}",
];

/// What a generated `for` loop iterates over.
pub const ITERABLES: &[&str] = &[
    "messages",
    "messages[::-1]",
    "messages[1:]",
    "range(3)",
    "range(100000)",
    "range(99999, 0, -1)",
    "message.content",
    "message.content.split()",
    "message.items()",
    "'abc'",
    "ns",
    "tools",
];

/// Conditions of a generated `if`.
pub const CONDITIONS: &[&str] = &[
    "add_generation_prompt",
    "loop.first",
    "loop.last and not loop.first",
    "message.role == 'user'",
    "'</think>' in message.content",
    "message.content is string",
    "enable_thinking is defined and enable_thinking is false",
    "ns.n > 3",
    "tools is none",
    "messages|length > 1",
];

/// A template from a small grammar: balanced blocks (for, if, macro, filter) around expressions
/// and text, so that generated templates compile and run deep.
pub fn grammar_template() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => select(JINJA)
            .prop_filter("an expression or a set", |s| s.starts_with("{{") || s.starts_with("{% set"))
            .prop_map(str::to_owned),
        1 => "[a-z <>|\n]{0,8}",
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let body = proptest::collection::vec(inner, 0..4).prop_map(|v| v.concat());
        prop_oneof![
            (select(ITERABLES), body.clone()).prop_map(|(it, body)| {
                format!("{{% for message in {it} %}}{body}{{% endfor %}}")
            }),
            (select(CONDITIONS), body.clone(), body.clone())
                .prop_map(|(c, a, b)| { format!("{{% if {c} %}}{a}{{% else %}}{b}{{% endif %}}") }),
            body.clone().prop_map(|b| {
                format!("{{% macro m(message) %}}{b}{{% endmacro %}}{{{{ m(messages[0]) }}}}")
            }),
            body.clone()
                .prop_map(|b| format!("{{% filter upper %}}{b}{{% endfilter %}}")),
            body,
        ]
    })
    .prop_map(|t| format!("{{% set ns = namespace(n=0) %}}{t}"))
}

pub fn template_source(seeds: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        // A seed template, mutated.
        1 => (select(seeds), proptest::collection::vec(text_mutation(), 1..=4)).prop_map(|(src, ms)| {
            String::from_utf8_lossy(&mutated(src.as_bytes(), &ms, &[])).into_owned()
        }),
        // Jinja fragments and bits of text.
        1 => proptest::collection::vec(
            prop_oneof![4 => select(JINJA).prop_map(str::to_owned), 1 => ".{0,6}"],
            0..24
        )
        .prop_map(|v| v.concat()),
        // Balanced templates.
        2 => grammar_template(),
    ]
}

/// Message contents: arbitrary text, and text full of template syntax.
pub fn content() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![select(JINJA).prop_map(str::to_owned), ".{0,4}"],
            0..8
        )
        .prop_map(|v| v.concat()),
    ]
}

pub fn messages() -> impl Strategy<Value = Vec<ChatMessage>> {
    let role = prop_oneof![
        select(&["system", "user", "assistant", "tool", ""][..]).prop_map(str::to_owned),
        ".{0,8}"
    ];
    proptest::collection::vec(
        (role, content()).prop_map(|(r, c)| ChatMessage::new(r, c)),
        0..5,
    )
}
