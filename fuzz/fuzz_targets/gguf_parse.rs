//! The GGUF reader on arbitrary bytes: it must return an error or a header whose every tensor
//! view lies inside the input, never panic or allocate by a count the bytes do not back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmfile::gguf::Gguf;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = Gguf::parse(data) else {
        return;
    };
    for (key, value) in gguf.metadata() {
        let _ = format!("{key} = {value}");
        let _ = gguf.get_str_opt(key);
        let _ = gguf.get_u32_opt(key);
        let _ = gguf.get_f32_opt(key);
        let _ = gguf.get_bool_opt(key);
        let _ = gguf.get_array_opt(key);
    }
    let _ = gguf.architecture();
    for tensor in gguf.tensors() {
        let within = tensor.data.as_ptr_range();
        assert!(data.as_ptr_range().start <= within.start && within.end <= data.as_ptr_range().end);
        assert_eq!(
            tensor.data.len(),
            tensor.ty.row_bytes(tensor.row_len()).unwrap() * tensor.n_rows()
        );
        assert!(gguf.tensor(&tensor.name).is_some());
    }
});
