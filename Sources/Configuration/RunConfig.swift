// RunConfig: one JSON file that says what to train and how: {"model": {...}, "train": {...}}.
//
// The model block is LlamaConfig's own keys; the train and finetune blocks are declared key by key in
// TrainSettings.swift and FineTuneSettings.swift. Unknown keys are refused, so a typo never silently falls back
// to a default. What this is not: the checks of values (Validation.swift).
import Foundation
import Model
import Support

/// Which stage a run trains; recorded in checkpoints, so that a stage never resumes another's. Each is also
/// the name of the command that runs it (the launcher catches preemption signals for every one of them), so
/// a new stage is a case here, its config block and its command.
public enum TrainingStage: String, Codable, CaseIterable, Sendable {
    case pretrain, sft, reward, dpo, ppo
}

public struct RunConfig: Codable, Equatable, Sendable {
    public var model: LlamaConfig
    public var train: TrainSettings
    /// The fine-tuning stages' data and starting point (`llama-train sft` and `reward`).
    public var finetune: FineTuneSettings?
    /// PPO's judges, value model and iteration (`llama-train ppo`).
    public var ppo: PPOSettings?

    public init(model: LlamaConfig, train: TrainSettings = TrainSettings()) {
        self.model = model
        self.train = train
    }

    /// Reads and validates a run config; every error names the file and the key.
    public static func load(path: String) throws -> RunConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, field: "-", message: "cannot read it: \(UnreadablePath.reason(path))")
        }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data)
        } catch {
            // The parser's own reason ("Number 1e400 is not representable"), not a bare "not JSON".
            let reason = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            throw ConfigError(file: path, field: "-", message: "not valid JSON: \(reason)")
        }
        guard let object = parsed as? [String: Any] else {
            throw ConfigError(file: path, field: "-", message: "not a JSON object")
        }
        // The parsers keep one of two equal keys silently; a config that says "lr" twice means one of them.
        if let twice = JSONDuplicateKeys.first(in: [UInt8](data)) {
            throw ConfigError(
                file: path, field: twice.path,
                message: "is given twice (lines \(twice.firstLine) and \(twice.secondLine)); keep the one you mean")
        }
        let blocks = ["model", "train", "finetune", "ppo"]
        if let unknown = object.keys.sorted().first(where: { !blocks.contains($0) }) {
            throw ConfigError(
                file: path, field: unknown, message: "unknown key; known keys: \(blocks.joined(separator: ", "))")
        }
        // Each block refuses the keys it does not declare.
        try ModelBlock.settings.checkKnown((object["model"] as? [String: Any] ?? [:]).keys, file: path)
        try TrainSettings.settings.checkKnown((object["train"] as? [String: Any] ?? [:]).keys, file: path)
        try FineTuneSettings.settings.checkKnown((object["finetune"] as? [String: Any] ?? [:]).keys, file: path)
        try PPOSettings.settings.checkKnown((object["ppo"] as? [String: Any] ?? [:]).keys, file: path)
        let config: RunConfig
        do {
            config = try JSONDecoder().decode(RunConfig.self, from: data)
        } catch let error as DecodingError {
            throw ConfigError(file: path, field: error.fieldPath, message: error.reason)
        } catch let error as ConfigError {
            throw ConfigError(file: path, field: error.field, message: error.message)
        }
        try config.validate(file: path)
        return config
    }
}

extension DecodingError {
    public var fieldPath: String {
        let path: [CodingKey]
        switch self {
        case let .keyNotFound(key, context): path = context.codingPath + [key]
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context):
            path = context.codingPath
        @unknown default: path = []
        }
        return path.map(\.stringValue).joined(separator: ".")
    }

    public var reason: String {
        switch self {
        case .keyNotFound: "is required"
        case let .typeMismatch(type, _):
            "has the wrong type, expected \(type == UInt64.self ? "an integer in 0...2^64-1" : "\(type)")"
        case .valueNotFound: "is null"
        case let .dataCorrupted(context): "is not a value this field can hold (\(context.debugDescription))"
        @unknown default: "is invalid"
        }
    }
}

extension RunConfig {
    /// Every field of the config as (section.key, value) over a fixed schema (absent fields included), in a
    /// fixed order: what the ranks compare at start-up.
    public var fingerprintFields: [(name: String, value: String)] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        func section<T: Encodable>(_ value: T?) -> [String: Any] {
            guard let value, let data = try? encoder.encode(value) else { return [:] }
            return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        }
        func text(_ value: Any?) -> String {
            guard let value else { return "absent" }
            if value is [String: Any] || value is [Any],
                let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])
            {
                return String(decoding: data, as: UTF8.self)
            }
            return "\(value)"
        }
        let sections: [(String, [String], [String: Any])] = [
            ("model", LlamaConfig.fileKeys, section(model)),
            ("train", TrainSettings.settings.names, section(train)),
            ("finetune", FineTuneSettings.settings.names, section(finetune)),
            ("ppo", PPOSettings.settings.names, section(ppo)),
        ]
        return sections.flatMap { name, keys, values in keys.sorted().map { ("\(name).\($0)", text(values[$0])) } }
    }
}
