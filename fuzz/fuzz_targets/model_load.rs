//! GGUF bytes → `Engine::from_bytes`: an error for anything that does not describe a usable model,
//! never a panic. A model that does load must also run a token without panicking, since a
//! hyperparameter that load let through would otherwise surface only there.
#![no_main]

use kernels::Kernels;
use libfuzzer_sys::fuzz_target;
use llmfile::engine::Engine;
use llmfile::sampling::argmax;

fuzz_target!(|data: &[u8]| {
    let Ok(engine) = Engine::from_bytes(data.to_vec(), Kernels::detect()) else {
        return;
    };
    let Ok(mut session) = engine.session(2) else {
        return;
    };
    let logits = session
        .eval(&[0])
        .expect("token 0 fits every vocabulary and the context");
    assert_eq!(logits.len(), engine.model().hparams.n_vocab);
    let next = argmax(&logits);
    session.eval(&[next]).expect("the second position fits");
});
