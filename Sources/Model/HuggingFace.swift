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
        let weights = try HuggingFaceWeights(directory: directory)
        for spec in layout.tensors {
            try weights.read(
                spec.name, shape: spec.shape, elements: 0..<spec.count, into: parameters.pointer + spec.offset)
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

    /// Whether `name` is a file `save` or an export writes (an earlier model's, replaced whole).
    public static func isWrittenFile(_ name: String) -> Bool { writtenFiles.contains(name) || isShardName(name) }

    /// Writes config.json and the weights as `dtype` into `directory`, which appears whole or not at all (see
    /// AtomicDirectory): one model.safetensors, or, above `maxShardBytes`, Hugging Face's sharded layout.
    /// `extras` writes more files into the staging directory first (the tokenizer and its configs). One
    /// process holding every parameter; a sharded run writes through HuggingFaceExport from every rank.
    public static func save(
        config: LlamaConfig, layout: ParameterLayout, parameters: FloatBuffer, directory: String,
        dtype: SafeTensorsDType = .f32, maxShardBytes: Int = Int.max, extras: (String) throws -> Void = { _ in }
    ) throws {
        let export = HuggingFaceExport(config: config, layout: layout, dtype: dtype, maxShardBytes: maxShardBytes)
        let staging = AtomicDirectory.staging(in: directory, tag: AtomicDirectory.tag())
        do {
            try export.begin(directory, staging: staging)
            try export.write(global: 0..<layout.count, from: UnsafePointer(parameters.pointer), in: staging)
            try extras(staging)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        try export.commit(staging: staging, to: directory)
    }
}

/// A Hugging Face directory written by every rank of a job, each the parameters it owns, with no gather: the
/// files' names, headers and every tensor's byte offset follow from the layout alone, so each rank computes
/// them alike. Rank 0 creates the files at their full size with their headers (`begin`); then every rank
/// writes its ranges in place, converted a 1M-element chunk at a time (`write`, 2 MB of staging for bf16) and
/// synced; after a barrier rank 0 adds the index and config.json and moves the directory into place
/// (`commit`). The file system must be one the ranks share, as for checkpoints.
public struct HuggingFaceExport {
    public struct File {
        public let name: String
        public let header: [UInt8]
        public let size: Int
    }
    public let config: LlamaConfig
    public let dtype: SafeTensorsDType
    public let files: [File]
    /// For every tensor of the layout, in order: its file and the byte offset of its data in it.
    public let placement: [(spec: TensorSpec, file: Int, offset: Int)]

    public init(config: LlamaConfig, layout: ParameterLayout, dtype: SafeTensorsDType, maxShardBytes: Int) {
        self.config = config
        self.dtype = dtype
        // Files split at tensor boundaries, in layout order, each at most maxShardBytes unless one tensor is more.
        var groups: [[TensorSpec]] = [[]], bytes = 0
        for spec in layout.tensors {
            let size = spec.count * dtype.bytes
            if bytes + size > maxShardBytes && !groups[groups.count - 1].isEmpty {
                groups.append([])
                bytes = 0
            }
            groups[groups.count - 1].append(spec)
            bytes += size
        }
        var files: [File] = []
        var placement: [(spec: TensorSpec, file: Int, offset: Int)] = []
        for (k, group) in groups.enumerated() {
            let header = SafeTensorsWriter.header(group.map { ($0.name, $0.shape) }, dtype: dtype)
            var offset = header.count
            for spec in group {
                placement.append((spec, k, offset))
                offset += spec.count * dtype.bytes
            }
            let name = groups.count == 1 ? "model.safetensors" : HuggingFace.shardName(k + 1, of: groups.count)
            files.append(File(name: name, header: header, size: offset))
        }
        (self.files, self.placement) = (files, placement)
    }

    /// Rank 0: makes `directory` and the staging directory in it (removing a killed writer's), and every weight
    /// file in it at its full size, header written and synced.
    public func begin(_ directory: String, staging: String) throws {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            AtomicDirectory.removeStale(in: directory)
            try? fm.removeItem(atPath: staging)
            try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        } catch {
            throw FileError(path: staging, message: "cannot create the directory: \(plainText(error))")
        }
        for file in files {
            let path = staging + "/" + file.name
            guard fm.createFile(atPath: path, contents: nil), truncate(path, off_t(file.size)) == 0 else {
                throw FileError(path: path, message: "cannot create it at \(file.size) bytes: \(errnoText())")
            }
            let writer = try FileWriter(existing: path)
            try file.header.withUnsafeBytes { try writer.write($0, at: 0) }
            try writer.sync()
        }
    }

    /// Writes the parameters' flat range `global`, whose values start at `values`, into the staged files and
    /// syncs them. Ranks write disjoint ranges of the same files.
    public func write(global: Range<Int>, from values: UnsafePointer<Float>, in staging: String) throws {
        try write([(global, values)], in: staging)
    }

    public func write(_ ranges: [(global: Range<Int>, values: UnsafePointer<Float>)], in staging: String) throws {
        var writers: [Int: FileWriter] = [:]
        var buffer = [UInt16](repeating: 0, count: 1 << 20)
        for (global, values) in ranges {
            for (spec, k, offset) in placement {
                let overlap = (spec.offset..<(spec.offset + spec.count)).clamped(to: global)
                guard !overlap.isEmpty else { continue }
                if writers[k] == nil { writers[k] = try FileWriter(existing: staging + "/" + files[k].name) }
                var position = offset + (overlap.lowerBound - spec.offset) * dtype.bytes
                try SafeTensorsWriter.convert(
                    UnsafeBufferPointer(start: values + (overlap.lowerBound - global.lowerBound), count: overlap.count),
                    to: dtype, through: &buffer
                ) { bytes in
                    try writers[k]!.write(bytes, at: position)
                    position += bytes.count
                }
            }
        }
        for writer in writers.values { try writer.sync() }
    }

    /// Rank 0, once every rank has written: the index (sharded layout) and config.json, then the files moved
    /// into `directory` (AtomicDirectory), the index or single weight file last. Files written beside the
    /// weights (the tokenizer's) replace their namesakes; other files are left as they are.
    public func commit(staging: String, to directory: String) throws {
        if files.count > 1 {
            var map: [String: String] = [:]
            for (spec, k, _) in placement { map[spec.name] = files[k].name }
            let total = placement.reduce(0) { $0 + $1.spec.count * dtype.bytes }
            try AtomicFile.write(
                try JSONSerialization.data(
                    withJSONObject: ["metadata": ["total_size": total], "weight_map": map],
                    options: [.prettyPrinted, .sortedKeys]), to: staging + "/model.safetensors.index.json")
        }
        try AtomicFile.write(HuggingFace.configJSON(config, dtype: dtype), to: staging + "/config.json")
        try AtomicDirectory.commit(
            staging: staging, to: directory,
            replaceable: HuggingFace.isWrittenFile,
            last: { $0 == "model.safetensors" || $0 == "model.safetensors.index.json" })
    }
}

/// Where a model's starting weights are read from, a tensor's range at a time, so that a rank reads only
/// what it owns: a Hugging Face directory (HuggingFaceWeights) or one of our checkpoints.
public protocol WeightSource: AnyObject {
    /// What the error messages name: the directory or checkpoint.
    var location: String { get }
    /// The model the source holds (its config.json or manifest).
    var config: LlamaConfig { get }
    /// The shape of tensor `name`, nil when the source lacks it.
    func shape(of name: String) -> [Int]?
    /// Elements `elements` (flat, row-major) of tensor `name`, converted to float32 into `destination`.
    func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws
}

/// A Hugging Face directory opened for reading by tensor and range: config.json, and the header of every
/// weight file (model.safetensors, or every shard model.safetensors.index.json names). Opening reads headers
/// only; a missing shard, a tensor its index promises but its file lacks, or a file shorter than its header
/// says is refused here, on every rank alike, before any rank reads data.
public final class HuggingFaceWeights: WeightSource {
    public let directory: String
    public let config: LlamaConfig
    private let fileOf: [String: SafeTensorsFile]
    /// The file that lists the tensors: model.safetensors, or the index. A tensor it lacks is missing there.
    private let listing: String

    public var location: String { directory }

    public init(directory: String) throws {
        self.directory = directory
        let fm = FileManager.default
        let single = directory + "/model.safetensors"
        let index = directory + "/model.safetensors.index.json"
        let hasWeights = fm.fileExists(atPath: single) || fm.fileExists(atPath: index)
        guard hasWeights else {
            let hint =
                fm.fileExists(atPath: directory + "/pytorch_model.bin")
                ? " (pytorch_model.bin is not read: save with safe_serialization=True)" : ""
            throw SafeTensorsError.unreadable(
                file: directory, reason: "neither model.safetensors nor model.safetensors.index.json\(hint)")
        }
        var fileOf: [String: SafeTensorsFile] = [:]
        listing = fm.fileExists(atPath: single) ? single : index
        if fm.fileExists(atPath: single) {
            let file = try SafeTensorsFile(path: single)
            for name in file.tensors.keys { fileOf[name] = file }
        } else {
            guard let data = fm.contents(atPath: index) else {
                throw SafeTensorsError.unreadable(file: index, reason: UnreadablePath.reason(index))
            }
            guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                let map = json["weight_map"] as? [String: String]
            else {
                throw SafeTensorsError.badHeader(file: index, reason: "no 'weight_map' object of tensor name → file")
            }
            var opened: [String: SafeTensorsFile] = [:]
            for (tensor, name) in map.sorted(by: { $0.key < $1.key }) {
                // A shard is a file of this directory: a name that would lead out of it is not followed.
                guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
                    throw SafeTensorsError.badHeader(
                        file: index, reason: "weight_map sends \(tensor) to '\(name)', outside the model directory")
                }
                if opened[name] == nil {
                    let path = directory + "/" + name
                    guard fm.fileExists(atPath: path) else {
                        throw SafeTensorsError.unreadable(
                            file: index,
                            reason: "weight_map sends \(tensor) to \(name), which is missing; copy the whole directory")
                    }
                    opened[name] = try SafeTensorsFile(path: path)
                }
                guard opened[name]!.tensors[tensor] != nil else {
                    throw SafeTensorsError.missingTensor(name: tensor, file: directory + "/" + name)
                }
                fileOf[tensor] = opened[name]
            }
        }
        self.fileOf = fileOf
        config = try HuggingFace.readConfig(path: directory + "/config.json")
    }

    public func shape(of name: String) -> [Int]? { fileOf[name]?.tensors[name]?.shape }

    public func read(_ name: String, elements: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws {
        guard let file = fileOf[name] else { throw SafeTensorsError.missingTensor(name: name, file: listing) }
        try file.readFloats(name, elements: elements, into: destination)
    }

    /// As `read`, checking first that the tensor has `shape`.
    public func read(
        _ name: String, shape: [Int], elements: Range<Int>, into destination: UnsafeMutablePointer<Float>
    ) throws {
        guard let file = fileOf[name] else { throw SafeTensorsError.missingTensor(name: name, file: listing) }
        let actual = file.tensors[name]!.shape
        guard actual == shape else {
            throw SafeTensorsError.shapeMismatch(name: name, file: file.path, expected: shape, actual: actual)
        }
        try file.readFloats(name, elements: elements, into: destination)
    }
}
