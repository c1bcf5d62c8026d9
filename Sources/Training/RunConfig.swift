// RunConfig: one JSON file that says what to train and how: {"model": {...}, "train": {...}}.
//
// The model block is LlamaConfig's own keys; the train block holds the batch shape and seed now, and grows
// with the training loop. Unknown keys are refused, so a typo never silently falls back to a default.
import Foundation
import Model

public struct TrainSettings: Codable, Equatable, Sendable {
    /// Tokens per sequence. 256 keeps the small configs fast on 2 cores; Llama 2 itself uses 4096.
    public var seqLen: Int = 256
    /// Sequences per rank per micro-step.
    public var microBatch: Int = 4
    /// Seeds initialisation and synthetic data.
    public var seed: UInt64 = 1337

    public init(seqLen: Int = 256, microBatch: Int = 4, seed: UInt64 = 1337) {
        self.seqLen = seqLen
        self.microBatch = microBatch
        self.seed = seed
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case seqLen = "seq_len", microBatch = "micro_batch", seed
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = TrainSettings()
        seqLen = try c.decodeIfPresent(Int.self, forKey: .seqLen) ?? defaults.seqLen
        microBatch = try c.decodeIfPresent(Int.self, forKey: .microBatch) ?? defaults.microBatch
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? defaults.seed
    }
}

public struct RunConfig: Codable, Equatable, Sendable {
    public var model: LlamaConfig
    public var train: TrainSettings

    public init(model: LlamaConfig, train: TrainSettings = TrainSettings()) {
        self.model = model
        self.train = train
    }

    /// Reads and validates a run config; every error names the file and the key.
    public static func load(path: String) throws -> RunConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, field: "-", message: "cannot read the file")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ConfigError(file: path, field: "-", message: "not a JSON object")
        }
        let allowed: [String: Set<String>] = [
            "": ["model", "train"],
            "model": Set(LlamaConfig.fileKeys),
            "train": Set(TrainSettings.CodingKeys.allCases.map(\.rawValue)),
        ]
        for (section, keys) in allowed {
            let dict = section.isEmpty ? object : (object[section] as? [String: Any] ?? [:])
            if let unknown = dict.keys.sorted().first(where: { !keys.contains($0) }) {
                throw ConfigError(file: path, field: section.isEmpty ? unknown : "\(section).\(unknown)",
                                  message: "unknown key; known keys: \(keys.sorted().joined(separator: ", "))")
            }
        }
        let config: RunConfig
        do {
            config = try JSONDecoder().decode(RunConfig.self, from: data)
        } catch let error as DecodingError {
            throw ConfigError(file: path, field: error.fieldPath, message: error.reason)
        }
        try config.model.validate(file: path)
        if config.train.seqLen <= 0 || config.train.seqLen > config.model.maxSeqLen {
            throw ConfigError(file: path, field: "train.seq_len",
                              message: "must be in 1...\(config.model.maxSeqLen) (model.max_seq_len), got \(config.train.seqLen)")
        }
        if config.train.microBatch <= 0 {
            throw ConfigError(file: path, field: "train.micro_batch", message: "must be positive, got \(config.train.microBatch)")
        }
        return config
    }
}

extension DecodingError {
    var fieldPath: String {
        let path: [CodingKey]
        switch self {
        case let .keyNotFound(key, context): path = context.codingPath + [key]
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context):
            path = context.codingPath
        @unknown default: path = []
        }
        return path.map(\.stringValue).joined(separator: ".")
    }

    var reason: String {
        switch self {
        case .keyNotFound: "is required"
        case let .typeMismatch(type, _): "has the wrong type, expected \(type)"
        case .valueNotFound: "is null"
        case let .dataCorrupted(context): context.debugDescription
        @unknown default: "is invalid"
        }
    }
}
