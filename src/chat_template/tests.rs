use super::*;

/// Gemma 2's template as Google ships it: no system role, roles must alternate.
const GEMMA2: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

/// SmolLM2's ChatML template, as its GGUF carries it.
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn tokens() -> TemplateTokens {
    TemplateTokens {
        bos: "<bos>".into(),
        eos: "<eos>".into(),
        tokenizer_adds_bos: true,
    }
}

fn message(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.into(),
    }
}

fn chat() -> Vec<Message> {
    vec![
        message(Role::System, "Be brief."),
        message(Role::User, "Hi"),
        message(Role::Assistant, "Hello."),
        message(Role::User, "Name a colour."),
    ]
}

#[test]
fn gemma_puts_the_system_text_in_the_first_user_turn_as_the_built_in_format_does() {
    let template = ChatTemplate::for_model("gemma2", Some(GEMMA2), &tokens());
    assert!(
        template.describe().contains("raise_exception"),
        "the Jinja source is in use"
    );
    let prompt = template.render(&chat()).unwrap();
    assert_eq!(
        prompt,
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(
        prompt,
        ChatFormat::Gemma.render(&chat()),
        "one text, whichever renders it"
    );
    assert_eq!(template.format(), &ChatFormat::Gemma);
}

#[test]
fn other_refusals_are_the_clients_to_fix() {
    let template = ChatTemplate::for_model("gemma2", Some(GEMMA2), &tokens());
    let error = template
        .render(&[message(Role::User, "a"), message(Role::User, "b")])
        .unwrap_err();
    assert!(
        matches!(&error, TemplateError::Raised(m) if m.contains("must alternate")),
        "{error}"
    );
}

#[test]
fn chatml_from_the_gguf_renders_as_the_built_in_format() {
    let template = ChatTemplate::for_model("llama", Some(SMOLLM2), &tokens());
    let built_in = ChatFormat::detect("llama", Some(SMOLLM2));
    for messages in [chat(), chat()[1..].to_vec()] {
        assert_eq!(
            template.render(&messages).unwrap(),
            built_in.render(&messages)
        );
    }
}

#[test]
fn a_leading_bos_is_left_to_the_tokenizer() {
    let source =
        "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
    let adds = ChatTemplate::for_model("llama", Some(source), &tokens());
    assert_eq!(adds.render(&chat()[1..2]).unwrap(), "user: Hi\n");
    let keeps = ChatTemplate::for_model(
        "llama",
        Some(source),
        &TemplateTokens {
            tokenizer_adds_bos: false,
            ..tokens()
        },
    );
    assert_eq!(keeps.render(&chat()[1..2]).unwrap(), "<bos>user: Hi\n");
}

#[test]
fn python_string_methods_work_as_in_transformers() {
    let source = "{% for m in messages %}{{ m.content.strip().upper() }}{% if m.content.startswith(' ') %}!{% endif %}|{% endfor %}";
    let template = ChatTemplate::for_model("llama", Some(source), &tokens());
    let prompt = template
        .render(&[message(Role::User, " hi "), message(Role::Assistant, "yo")])
        .unwrap();
    assert_eq!(prompt, "HI!|YO|");
}

#[test]
fn hostile_templates_are_bounded_and_replaced_by_the_named_format() {
    let hostile = [
        "{% for i in range(100000000) %}<start_of_turn>{{ i }}{% endfor %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}<start_of_turn>{{ f(0) }}",
        "<start_of_turn>{% for m in messages %}{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}",
        "<start_of_turn>{{ 'x' * 100000000 }}",
        "<start_of_turn>{% if %}",
        "<start_of_turn>{{ raise_exception('no') }}",
        "<start_of_turn>nothing of the messages",
    ];
    for source in hostile {
        let started = std::time::Instant::now();
        let template = ChatTemplate::for_model("llama", Some(source), &tokens());
        assert_eq!(
            template.describe(),
            "gemma",
            "{source}: the markers name Gemma"
        );
        assert_eq!(
            template.render(&chat()).unwrap(),
            ChatFormat::Gemma.render(&chat())
        );
        assert!(
            started.elapsed().as_secs() < 5,
            "{source}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn names_and_files() {
    for name in BUILT_IN {
        let template = ChatTemplate::named(name, "gemma2", &tokens()).unwrap();
        assert_eq!(template.describe(), name);
    }
    let alpaca = ChatTemplate::named("alpaca", "gemma2", &tokens()).unwrap();
    assert!(alpaca
        .render(&chat())
        .unwrap()
        .contains("### Instruction:\nHi"));
    let error = ChatTemplate::named("vicuna", "gemma2", &tokens()).unwrap_err();
    assert!(error.to_string().contains("alpaca"), "{error}");
    let file = std::env::temp_dir().join(format!("llmfile-template-{}.jinja", std::process::id()));
    std::fs::write(&file, SMOLLM2).unwrap();
    let from_file = ChatTemplate::named(file.to_str().unwrap(), "llama", &tokens()).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(from_file
        .render(&chat())
        .unwrap()
        .starts_with("<|im_start|>system\nBe brief."));
}

#[test]
fn dates_are_civil() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    assert_eq!(civil_from_days(20_793), (2026, 12, 6));
}
