// Hugging Face Llama checkpoints: config.json and model.safetensors (single file or sharded with
// model.safetensors.index.json), read into and written from our flat parameter buffer.
//
// What this is: name and shape checking at the border with transformers. What this is not: a general
// transformers loader; a config that asks for something our model does not compute (biases, tied
// embeddings, rope scaling, another activation) is refused with the reason, never silently approximated.
import Foundation
import Support

public enum HuggingFace {
    // MARK: - config.json

    public static func readConfig(path: String) throws -> LlamaConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, field: "-", message: "cannot read it: \(UnreadablePath.reason(path))")
        }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ConfigError(file: path, field: "-", message: "not a JSON object")
        }
        // JSON true is an NSNumber too, and 1e9 or 2.5 would become an Int silently: take only whole numbers
        // written as such, in range, so `"num_hidden_layers": true` is refused rather than read as 1 layer.
        func strictInt(_ key: String) throws -> Int? {
            guard let raw = json[key] else { return nil }
            guard let value = raw as? NSNumber, String(cString: value.objCType) != "c",
                let exact = Int(exactly: value.doubleValue), Double(value.int64Value) == value.doubleValue
            else {
                throw ConfigError(file: path, field: key, message: "must be a whole number, got \(raw)")
            }
            return exact
        }
        func int(_ key: String) throws -> Int {
            guard let value = try strictInt(key) else {
                throw ConfigError(file: path, field: key, message: "is missing")
            }
            return value
        }
        func optionalNumber(_ key: String) -> Double? { (json[key] as? NSNumber)?.doubleValue }

        if let type = json["model_type"] as? String, type != "llama" {
            throw ConfigError(file: path, field: "model_type", message: "is '\(type)'; only 'llama' is supported")
        }
        if let act = json["hidden_act"] as? String, act != "silu" {
            throw ConfigError(file: path, field: "hidden_act", message: "is '\(act)'; Llama's SwiGLU needs 'silu'")
        }
        for key in ["attention_bias", "mlp_bias", "tie_word_embeddings"] where (json[key] as? Bool) == true {
            throw ConfigError(
                file: path, field: key, message: "is true; this trainer's Llama has no biases and untied embeddings")
        }
        // transformers 5 nests rope_theta in rope_parameters; 4.x keeps it at the top with rope_scaling.
        var theta = optionalNumber("rope_theta") ?? 10000
        for key in ["rope_parameters", "rope_scaling"] {
            guard let rope = json[key] as? [String: Any] else { continue }
            if let t = (rope["rope_theta"] as? NSNumber)?.doubleValue { theta = t }
            // Named as the file spells it: rope_scaling in transformers 4.x, rope_parameters in 5.
            let ropeType = rope["rope_type"] as? String ?? rope["type"] as? String ?? "default"
            if ropeType != "default" {
                throw ConfigError(
                    file: path, field: key,
                    message: "rope_type '\(ropeType)' is not supported; only the default rotary embedding")
            }
        }
        let heads = try int("num_attention_heads")
        let config = LlamaConfig(
            dim: try int("hidden_size"), nLayers: try int("num_hidden_layers"), nHeads: heads,
            nKVHeads: try strictInt("num_key_value_heads") ?? heads,
            vocabSize: try int("vocab_size"), ffnHiddenSize: try int("intermediate_size"),
            headDim: try strictInt("head_dim"),
            normEps: optionalNumber("rms_norm_eps") ?? 1e-6, ropeTheta: theta,
            maxSeqLen: try strictInt("max_position_embeddings") ?? 4096)
        var result = config
        let architectures = json["architectures"] as? [String] ?? []
        if architectures.contains("LlamaForSequenceClassification") {
            let labels =
                (json["num_labels"] as? NSNumber)?.intValue ?? ((json["id2label"] as? [String: Any])?.count ?? 1)
            guard labels == 1 else {
                throw ConfigError(
                    file: path, field: "num_labels", message: "is \(labels); a reward model has one scalar output")
            }
            result.heads = [.score]
        }
        // Heads beyond what the architecture implies (a policy's value head) are listed by our own key.
        if let listed = json[Self.headsKey] as? [String] {
            result.heads = try listed.map { name in
                guard let head = OutputHead(rawValue: name) else {
                    throw ConfigError(
                        file: path, field: Self.headsKey,
                        message: "'\(name)' is not a head; use \(OutputHead.allCases.map(\.rawValue))")
                }
                return head
            }
        }
        do {
            try result.validate(file: path)
        } catch let error as ConfigError {
            // Name the field as config.json spells it.
            let names = [
                "dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
                "n_kv_heads": "num_key_value_heads", "ffn_hidden_size": "intermediate_size",
                "max_seq_len": "max_position_embeddings",
                "norm_eps": "rms_norm_eps", "head_dim": "head_dim", "vocab_size": "vocab_size",
                "rope_theta": "rope_theta",
            ]
            throw ConfigError(file: path, field: names[error.field] ?? error.field, message: error.message)
        }
        return result
    }

    /// transformers' class for the heads: the causal LM wherever lm_head is (the other heads beside it are
    /// unused there, as TRL's value head is), the classifier for a reward model, else the bare trunk.
    static func architecture(_ heads: [OutputHead]) -> String {
        if heads.contains(.lm) { return "LlamaForCausalLM" }
        return heads == [.score] ? "LlamaForSequenceClassification" : "LlamaModel"
    }

    /// config.json's key for a head list that no single transformers architecture implies.
    public static let headsKey = "llama_train_heads"

    public static func configJSON(_ c: LlamaConfig, dtype: SafeTensorsDType = .f32) -> Data {
        var object: [String: Any] = [
            "architectures": [Self.architecture(c.heads)],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": c.dim, "intermediate_size": c.ffnHiddenSize, "num_hidden_layers": c.nLayers,
            "num_attention_heads": c.nHeads, "num_key_value_heads": c.nKVHeads, "head_dim": c.headDim,
            "vocab_size": c.vocabSize, "rms_norm_eps": c.normEps, "rope_theta": c.ropeTheta,
            "max_position_embeddings": c.maxSeqLen, "tie_word_embeddings": false, "attention_bias": false,
            "mlp_bias": false, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": dtype.torchName,
        ]
        if c.heads == [.score] { object["num_labels"] = 1 }
        // transformers keeps unknown keys as attributes; LlamaForCausalLM loads the lm_head part and reports the
        // value head's tensor as unused (TRL's AutoModelForCausalLMWithValueHead reads it as v_head).
        if c.heads != [.lm] && c.heads != [.score] { object[Self.headsKey] = c.heads.map(\.rawValue) }
        return try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }

    // MARK: - Weights

    /// Reads the directory's config and weights into a new model (for inference unless asked otherwise).
    public static func loadModel(directory: String, purpose: ModelPurpose = .inference) throws -> LlamaModel {
        let config = try readConfig(path: directory + "/config.json")
        let model = try LlamaModel(config: config, purpose: purpose)
        try loadWeights(directory: directory, layout: model.layout, into: model.parameters)
        return model
    }

    /// Fills `parameters` from model.safetensors or the shards listed in model.safetensors.index.json.
    /// Every tensor of the layout must be present with its exact shape; extra tensors (rotary caches of old
    /// exports) are ignored.
    public static func loadWeights(directory: String, layout: ParameterLayout, into parameters: FloatBuffer) throws {
        let fm = FileManager.default
        let single = directory + "/model.safetensors"
        let index = directory + "/model.safetensors.index.json"
        var fileForTensor: [String: String] = [:]
        if fm.fileExists(atPath: single) {
            for spec in layout.tensors { fileForTensor[spec.name] = single }
        } else if let data = fm.contents(atPath: index) {
            guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                let map = json["weight_map"] as? [String: String]
            else {
                throw SafeTensorsError.badHeader(file: index, reason: "no 'weight_map' object of tensor name → file")
            }
            for spec in layout.tensors {
                guard let file = map[spec.name] else {
                    throw SafeTensorsError.missingTensor(name: spec.name, file: index)
                }
                // A shard is a file of this directory: a name that would lead out of it is not followed.
                guard !file.isEmpty, !file.contains("/"), file != ".", file != ".." else {
                    throw SafeTensorsError.badHeader(
                        file: index, reason: "weight_map sends \(spec.name) to '\(file)', outside the model directory")
                }
                fileForTensor[spec.name] = directory + "/" + file
            }
        } else {
            let hint =
                fm.fileExists(atPath: directory + "/pytorch_model.bin")
                ? " (pytorch_model.bin is not read: save with safe_serialization=True)" : ""
            throw SafeTensorsError.unreadable(
                file: directory, reason: "neither model.safetensors nor model.safetensors.index.json\(hint)")
        }
        var opened: [String: SafeTensorsFile] = [:]
        for spec in layout.tensors {
            let path = fileForTensor[spec.name]!
            if opened[path] == nil { opened[path] = try SafeTensorsFile(path: path) }
            try opened[path]!.readFloats(spec.name, expectedShape: spec.shape, into: parameters.pointer + spec.offset)
        }
        try layout.checkFinite(parameters, source: directory)
    }

    /// The files `save` writes, for callers that check outputs against inputs first: these, and shards
    /// named as `isShardName` says.
    public static let writtenFiles = ["config.json", "model.safetensors", "model.safetensors.index.json"]

    /// model-0000k-of-0000n.safetensors, Hugging Face's name for one of n weight files.
    public static func shardName(_ k: Int, of n: Int) -> String {
        String(format: "model-%05d-of-%05d.safetensors", k, n)
    }

    public static func isShardName(_ name: String) -> Bool {
        name.hasPrefix("model-") && name.hasSuffix(".safetensors") && name.contains("-of-")
    }

    /// Writes config.json and the weights as `dtype`, each file atomically: one model.safetensors, or, above
    /// `maxShardBytes`, Hugging Face's sharded layout (files split at tensor boundaries, in layout order, and
    /// model.safetensors.index.json, written last). The layout not written is removed, so a reader never
    /// finds an older model beside the new one.
    public static func save(
        config: LlamaConfig, layout: ParameterLayout, parameters: FloatBuffer, directory: String,
        dtype: SafeTensorsDType = .f32, maxShardBytes: Int = Int.max
    ) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let entries = layout.tensors.map {
            SafeTensorsEntry(
                name: $0.name, shape: $0.shape,
                values: UnsafeBufferPointer(start: parameters.pointer + $0.offset, count: $0.count))
        }
        var groups: [[SafeTensorsEntry]] = [[]], bytes = 0
        for entry in entries {
            let size = entry.values.count * dtype.bytes
            if bytes + size > maxShardBytes && !groups[groups.count - 1].isEmpty {
                groups.append([])
                bytes = 0
            }
            groups[groups.count - 1].append(entry)
            bytes += size
        }
        let fm = FileManager.default
        let index = directory + "/model.safetensors.index.json", single = directory + "/model.safetensors"
        // Whatever layout an earlier save left goes first (the single file is replaced in place below).
        try? fm.removeItem(atPath: index)
        for name in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] where isShardName(name) {
            try? fm.removeItem(atPath: directory + "/" + name)
        }
        if groups.count == 1 {
            try SafeTensorsWriter.write(entries, dtype: dtype, to: single)
        } else {
            try? fm.removeItem(atPath: single)
            var map: [String: String] = [:]
            for (k, group) in groups.enumerated() {
                let name = shardName(k + 1, of: groups.count)
                try SafeTensorsWriter.write(group, dtype: dtype, to: directory + "/" + name)
                for entry in group { map[entry.name] = name }
            }
            let total = entries.reduce(0) { $0 + $1.values.count * dtype.bytes }
            try AtomicFile.write(
                try JSONSerialization.data(
                    withJSONObject: ["metadata": ["total_size": total], "weight_map": map],
                    options: [.prettyPrinted, .sortedKeys]), to: index)
        }
        try AtomicFile.write(configJSON(config, dtype: dtype), to: directory + "/config.json")
    }
}
