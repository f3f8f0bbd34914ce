//! GGUF bytes → `model::load`: an error for anything that does not describe a usable model,
//! never a panic. A model that does load must also run a token without panicking, since a
//! hyperparameter that load let through would otherwise surface only there.
#![no_main]

use kernels::Kernels;
use libfuzzer_sys::fuzz_target;
use llmfile::gguf::Gguf;
use llmfile::model;
use llmfile::sampling::argmax;
use llmfile::session::Session;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = Gguf::parse(data) else {
        return;
    };
    let Ok(model) = model::load(&gguf, Kernels::detect()) else {
        return;
    };
    let Ok(mut session) = Session::new(&model, 2) else {
        return;
    };
    let logits = session
        .eval(&[0])
        .expect("token 0 fits every vocabulary and the context");
    assert_eq!(logits.len(), model.hparams.n_vocab);
    let next = argmax(&logits);
    session.eval(&[next]).expect("the second position fits");
});
