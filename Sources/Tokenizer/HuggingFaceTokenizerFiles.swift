// The files beside tokenizer.model that transformers' Auto classes read, written as Llama 2's repositories
// have them: without tokenizer_config.json, AutoTokenizer loads a tokenizer that adds no <s> ("Hello world"
// → three ids where Llama 2 and our `generate` start with <s>), so transformers' pipelines would condition
// our models differently. What this is not: the weights' files (Model/HuggingFace.swift).
import Foundation
import Support

extension Tokenizer {
    /// tokenizer_config.json, special_tokens_map.json and generation_config.json for a model of
    /// `maxLength` positions: add <s>, not </s>; the special pieces by their names in this model; `legacy`
    /// true, which is sentencepiece's handling of the text after a special token (false drops the dummy
    /// prefix there: "<s>[INST]" would lose its "▁["); the chat template when the model was tuned on one.
    public func huggingFaceFiles(maxLength: Int, chatTemplate: String? = nil) throws -> [(name: String, bytes: Data)] {
        func piece(_ id: Int32) -> String? { id >= 0 && Int(id) < vocabSize ? model.pieces[Int(id)].text : nil }
        let (bos, eos, unk) = (piece(bosId), piece(eosId), piece(unkId))
        var config: [String: Any] = [
            "add_bos_token": bos != nil, "add_eos_token": false, "clean_up_tokenization_spaces": false,
            "legacy": true, "model_max_length": maxLength, "sp_model_kwargs": [String: Any](),
            "tokenizer_class": "LlamaTokenizer", "padding_side": "right",
        ]
        if let chatTemplate { config["chat_template"] = chatTemplate }
        var special: [String: Any] = [:]
        for (key, value) in [("bos_token", bos), ("eos_token", eos), ("unk_token", unk)] {
            guard let value else { continue }
            config[key] = value
            special[key] = value
        }
        var generation: [String: Any] = [:]
        if bos != nil { generation["bos_token_id"] = Int(bosId) }
        if eos != nil { generation["eos_token_id"] = Int(eosId) }
        func json(_ object: [String: Any]) throws -> Data {
            try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) + Data("\n".utf8)
        }
        return [
            ("tokenizer_config.json", try json(config)), ("special_tokens_map.json", try json(special)),
            ("generation_config.json", try json(generation)),
        ]
    }

    /// Writes a tokenizer.model's bytes (read from `source`) into `directory` with the files above beside it,
    /// each atomically.
    public static func writeHuggingFace(
        _ bytes: Data, source: String, to directory: String, maxLength: Int, chatTemplate: String? = nil
    ) throws {
        try AtomicFile.write(bytes, to: directory + "/tokenizer.model")
        let tokenizer = try Tokenizer(bytes: bytes, source: source)
        for file in try tokenizer.huggingFaceFiles(maxLength: maxLength, chatTemplate: chatTemplate) {
            try AtomicFile.write(file.bytes, to: directory + "/" + file.name)
        }
    }

    /// The names of the files `huggingFaceFiles` writes.
    public static let huggingFaceFileNames = [
        "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
    ]
}
