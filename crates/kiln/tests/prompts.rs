//! kiln-data's prompts rendered through a real checkpoint's chat template (SmolLM2's ChatML).

use kiln::data::{CountdownTemplate, MathTemplate, Prompt, countdown_prompt, math_prompt};
use kiln::model::{ChatMessage, Tokenizer, hub};

fn messages(prompt: &Prompt) -> Vec<ChatMessage> {
    match prompt {
        Prompt::Chat(m) => m
            .iter()
            .map(|m| ChatMessage::new(&m.role, &m.content))
            .collect(),
        Prompt::Text(t) => panic!("expected chat messages, got text {t:?}"),
    }
}

#[test]
fn countdown_chat_prompt_ends_in_the_assistant_prefill() {
    let tok = Tokenizer::from_gguf(&hub::smollm2_gguf().unwrap()).unwrap();
    let prompt = countdown_prompt(&[3, 5, 7], 22, CountdownTemplate::Chat);
    let msgs = messages(&prompt);
    assert_eq!(msgs.last().unwrap().role, "assistant");
    let text = tok.render_prompt(&msgs).unwrap();
    // ChatML: the user turn closes, the assistant turn opens, and the prefill follows verbatim
    // with no end-of-turn token after it, so the model continues inside its <think>.
    let prefill = &msgs.last().unwrap().content;
    assert!(
        text.ends_with(&format!("<|im_start|>assistant\n{prefill}")),
        "{text:?}"
    );
    assert!(prefill.ends_with("<think>"), "{prefill:?}");
    assert!(
        text.contains("[3, 5, 7]") && text.contains("22"),
        "{text:?}"
    );
    assert_eq!(text.matches("<|im_start|>assistant").count(), 1);
    let ids = tok.encode_prompt(&msgs).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}

#[test]
fn math_prompt_is_one_user_turn_with_a_generation_prompt() {
    let tok = Tokenizer::from_gguf(&hub::smollm2_gguf().unwrap()).unwrap();
    let msgs = messages(&math_prompt("What is $1+1$?", MathTemplate::Chat));
    let text = tok.render_prompt(&msgs).unwrap();
    assert!(
        text.contains("<|im_start|>user\nWhat is $1+1$? Let's think step by step"),
        "{text:?}"
    );
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
}
