//! The seed corpus: tiny Hugging Face models, tokenizers and chat templates, written by the
//! ignored test `write_seed_corpus` and checked against the committed files.

use super::*;

pub const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A Llama-3-style template (written for these tests): header tokens, an optional system
/// message, the date, contents printed verbatim.
pub const LLAMA3_LIKE_TEMPLATE: &str = "{{- bos_token }}
{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = '' %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}
{{- 'Today Date: ' + strftime_now('%d %b %Y') + '\\n\\n' }}
{{- system_message + '<|eot_id|>' }}
{%- for message in messages %}
    {%- if message.role not in ['user', 'assistant', 'system'] %}
        {{- raise_exception('unknown role ' ~ message.role) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
";

/// A Qwen3-style template (written for kiln's tests: see chat_template.rs): namespace, reversed
/// slicing, think-tag splitting, `enable_thinking`.
pub const QWEN3_LIKE_TEMPLATE: &str = "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and not(message.content.startswith('<tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == \"assistant\" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') + '<|im_end|>\\n' }}
        {%- else %}
            {{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content|trim + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}";

/// A tiny Llama's config.json and tensors in HF names and shapes (vocab 99: the character
/// tokenizer), stored in `dtype`.
pub fn hf_seed(
    arch: &str,
    vocab: usize,
    tied: bool,
) -> (Value, Vec<(String, Vec<usize>, safetensors::Dtype)>) {
    let (d, heads, kv_heads, hd, ff) = (8usize, 2usize, 1usize, 4usize, 16usize);
    let config = json!({
        "architectures": [if arch == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": d,
        "intermediate_size": ff,
        "num_hidden_layers": 1,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hd,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": if arch == "llama" {
            json!({"rope_type": "linear", "factor": 2.0})
        } else {
            Value::Null
        },
        "tie_word_embeddings": tied,
        "bos_token_id": null,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    });
    use safetensors::Dtype::{BF16, F16, F32};
    let p = "model.layers.0";
    let mut tensors = vec![
        ("model.embed_tokens.weight".to_string(), vec![vocab, d], F32),
        ("model.norm.weight".into(), vec![d], F32),
        (format!("{p}.input_layernorm.weight"), vec![d], F32),
        (
            format!("{p}.post_attention_layernorm.weight"),
            vec![d],
            BF16,
        ),
        (
            format!("{p}.self_attn.q_proj.weight"),
            vec![heads * hd, d],
            F16,
        ),
        (
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv_heads * hd, d],
            BF16,
        ),
        (
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv_heads * hd, d],
            F32,
        ),
        (
            format!("{p}.self_attn.o_proj.weight"),
            vec![d, heads * hd],
            F16,
        ),
        (format!("{p}.mlp.gate_proj.weight"), vec![ff, d], F32),
        (format!("{p}.mlp.up_proj.weight"), vec![ff, d], F16),
        (format!("{p}.mlp.down_proj.weight"), vec![d, ff], BF16),
    ];
    if arch == "qwen2" {
        for (name, n) in [
            ("q", heads * hd),
            ("k", kv_heads * hd),
            ("v", kv_heads * hd),
        ] {
            tensors.push((format!("{p}.self_attn.{name}_proj.bias"), vec![n], F32));
        }
    }
    if !tied {
        tensors.push(("lm_head.weight".into(), vec![vocab, d], F16));
    }
    (config, tensors)
}

pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, safetensors::Dtype)]) -> Vec<u8> {
    use safetensors::Dtype;
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(i, (_, shape, dtype))| {
            let n = shape.iter().product();
            match dtype {
                Dtype::F32 => f32_data(n, 100 + i as u64),
                Dtype::F16 => f16_data(n, 100 + i as u64),
                _ => bf16_data(n, 100 + i as u64),
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, shape, dtype), bytes)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap();
            (name.clone(), view)
        })
        .collect();
    let metadata = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize(views, Some(metadata)).unwrap()
}

/// A byte-level BPE tokenizer.json (the printable ASCII bytes, a few merges, two special
/// tokens, NFC, a Split + ByteLevel pre-tokenizer, a template post-processor), built with the
/// tokenizers crate so it is what the crate writes.
pub fn bpe_tokenizer_json() -> String {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{AddedToken, SplitDelimiterBehavior};
    let mut vocab: Vec<String> = ["<|im_start|>", "<|im_end|>"].map(String::from).to_vec();
    // GPT-2's byte symbols for the printable ASCII range; space and newline are Ġ and Ċ.
    vocab.extend((b'!'..=b'~').map(|b| (b as char).to_string()));
    vocab.extend(["Ġ", "Ċ", "Ġt", "he", "Ġthe", "12"].map(String::from));
    let merges: Vec<(String, String)> = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("1", "2")]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .to_vec();
    let vocab: tokenizers::models::bpe::Vocab = vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_normalizer(Some(tokenizers::normalizers::NFC));
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Split::new(
            SplitPattern::Regex(r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+| ?\p{L}+".into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .unwrap()
        .into(),
        ByteLevel::new(false, false, false).into(),
    ])));
    tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    tok.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single("<|im_start|>:0 $A:0")
            .unwrap()
            .try_pair("<|im_start|>:0 $A:0 $B:1")
            .unwrap()
            .special_tokens(vec![("<|im_start|>".to_string(), 0)])
            .build()
            .unwrap(),
    ));
    tok.add_special_tokens(&[
        AddedToken::from("<|im_start|>", true),
        AddedToken::from("<|im_end|>", true),
    ]);
    tok.to_string(true).unwrap()
}

/// Every seed file, by corpus path (relative to `tests/fuzz-corpus`).
pub fn seed_corpus() -> Files {
    let mut files = Vec::new();
    let text = |s: &str| s.as_bytes().to_vec();
    let pretty = |v: &Value| (serde_json::to_string_pretty(v).unwrap() + "\n").into_bytes();
    for (name, spec) in gguf_seeds() {
        files.push((format!("gguf/{name}"), spec.to_bytes()));
    }
    for (name, arch, vocab, tied) in [
        ("tiny-llama", "llama", 99, true),
        ("tiny-qwen2", "qwen2", 102, false),
    ] {
        let (config, tensors) = hf_seed(arch, vocab, tied);
        files.push((format!("safetensors/{name}/config.json"), pretty(&config)));
        files.push((
            format!("safetensors/{name}/model.safetensors"),
            safetensors_bytes(&tensors),
        ));
    }
    // The character tokenizer of the tiny recipes, with a list of named templates.
    files.push((
        "tokenizer/char-level/tokenizer.json".into(),
        text(&kiln_model::init::char_tokenizer_json().unwrap()),
    ));
    let mut cfg = kiln_model::init::char_tokenizer_config_json();
    cfg["chat_template"] = json!([
        {"name": "default", "template": SMOLLM2_TEMPLATE},
        {"name": "tool_use", "template": "{{ tools|tojson }}"},
    ]);
    files.push((
        "tokenizer/char-level/tokenizer_config.json".into(),
        pretty(&cfg),
    ));
    // A byte-level BPE with its template in chat_template.jinja (transformers 5's layout).
    files.push((
        "tokenizer/byte-bpe/tokenizer.json".into(),
        text(&bpe_tokenizer_json()),
    ));
    let cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": {"content": "<|im_start|>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false},
        "eos_token": "<|im_end|>",
        "pad_token": null,
        "add_bos_token": false,
        "model_max_length": 128,
    });
    files.push((
        "tokenizer/byte-bpe/tokenizer_config.json".into(),
        pretty(&cfg),
    ));
    files.push((
        "tokenizer/byte-bpe/chat_template.jinja".into(),
        text(QWEN3_LIKE_TEMPLATE),
    ));
    for (name, src) in [
        ("smollm2.jinja", SMOLLM2_TEMPLATE),
        ("llama3-like.jinja", LLAMA3_LIKE_TEMPLATE),
        ("qwen3-like.jinja", QWEN3_LIKE_TEMPLATE),
    ] {
        files.push((format!("chat-template/{name}"), text(src)));
    }
    files
}

/// The tokenizer directory that goes with each safetensors seed (its vocabulary size).
pub fn tokenizer_for(model: &str) -> &'static str {
    match model {
        "tiny-qwen2" => "byte-bpe",
        _ => "char-level",
    }
}

/// Writes the seed corpus. Run after changing a seed; commit the result.
#[test]
#[ignore = "writes tests/fuzz-corpus; run by hand after changing the seeds"]
pub fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    for (rel, bytes) in seed_corpus() {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

/// The committed seeds are what the generators write, and every one loads: the fuzzing starts
/// from valid inputs.
#[test]
pub fn seed_corpus_is_current_and_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut total = 0;
    for (rel, bytes) in seed_corpus() {
        let committed = std::fs::read(root.join(&rel))
            .unwrap_or_else(|e| panic!("{rel}: {e} (run the ignored test write_seed_corpus)"));
        // The BPE tokenizer's JSON comes from a hash map: compare it as JSON.
        if rel.ends_with(".json") {
            let a: Value = serde_json::from_slice(&committed).unwrap();
            let b: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                a, b,
                "{rel} is stale: run the ignored test write_seed_corpus"
            );
        } else {
            assert!(
                committed == bytes,
                "{rel} is stale: run the ignored test write_seed_corpus"
            );
        }
        total += committed.len();
    }
    assert!(
        total < 200_000,
        "the seed corpus has grown to {total} bytes"
    );

    let device = device();
    for (name, _) in corpus_files("gguf") {
        let path = corpus("gguf").join(&name);
        let model = Model::load_from(ModelLocation::Gguf(path), &device)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(model.tokenizer.has_chat_template(), "{name}");
        use_model(&model);
    }
    let scratch = Scratch::new("seeds");
    for (name, files) in corpus_dirs("safetensors") {
        let dir = scratch.dir(&name);
        write_files(&dir, &files);
        write_files(
            &dir,
            &corpus_files(&format!("tokenizer/{}", tokenizer_for(&name))),
        );
        let model = Model::load_from(ModelLocation::HfDir(dir), &device)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(model.tokenizer.has_chat_template(), "{name}");
        use_model(&model);
    }
    for (name, _) in corpus_files("chat-template") {
        let src = std::fs::read_to_string(corpus("chat-template").join(&name)).unwrap();
        let t = ChatTemplate::new(&src, "<s>".into(), "</s>".into()).unwrap();
        t.render(&[ChatMessage::new("user", "hi")], true)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
