// The run configuration: batch arithmetic and its refusals, and the validation of every field.
import Configuration
import Foundation
import Model
import Optim
import Support
import Testing

@Suite struct BatchArithmeticTests {
    @Test func accumulationStepsAndRefusals() throws {
        var t = TrainSettings()
        t.seqLen = 4096
        t.microBatch = 2
        #expect(try t.accumulationSteps(worldSize: 64) == 8)  // 1024 sequences = 64 ranks × 2 × 8
        #expect(try t.accumulationSteps(worldSize: 1) == 512)
        #expect { try t.accumulationSteps(worldSize: 3) } throws: { error in
            let text = "\(error)"
            return text.contains("micro_batch") && text.contains("rank counts that work with micro_batch 2: 1, 2, 4")
        }
        t.microBatch = 3
        #expect { try t.accumulationSteps(worldSize: 2) } throws: {
            "\($0)".contains("values that work on 2 rank(s): 1, 2, 4, 8")
        }
    }
}

@Suite struct ValidationTests {
    static func config() -> RunConfig {
        var t = TrainSettings()
        (t.seqLen, t.microBatch, t.globalBatchTokens, t.steps) = (16, 2, 64, 3)
        return RunConfig(
            model: LlamaConfig(dim: 32, nLayers: 1, nHeads: 2, vocabSize: 100, ffnHiddenSize: 64, maxSeqLen: 16),
            train: t)
    }

    /// Each field out of range is refused by name; the valid config passes.
    @Test func everyFieldIsCheckedByName() throws {
        try Self.config().validate()
        let cases: [(String, (inout RunConfig) -> Void)] = [
            ("train.lr", { $0.train.learningRate = -1 }), ("train.lr", { $0.train.learningRate = .nan }),
            ("train.grad_clip", { $0.train.gradClip = -1 }), ("train.beta1", { $0.train.adamw.beta1 = 1.5 }),
            ("train.beta2", { $0.train.adamw.beta2 = 1 }), ("train.weight_decay", { $0.train.adamw.weightDecay = -5 }),
            ("train.bucket_mb", { $0.train.bucketMB = 0 }), ("train.bucket_mb", { $0.train.bucketMB = 1e300 }),
            ("train.steps", { $0.train.steps = 0 }), ("train.warmup_steps", { $0.train.warmupSteps = -5 }),
            ("train.micro_batch", { $0.train.microBatch = 0 }),
            ("train.global_batch_tokens", { $0.train.globalBatchTokens = 1 << 62 }),
            ("train.data_weights.web", { $0.train.dataWeights = ["web": 1e308] }),
            ("train.synthetic_ignore_fraction", { $0.train.syntheticIgnoreFraction = 1 }),
            ("n_layers", { $0.model.nLayers = 1_000_000_000_000_000 }),
            ("vocab_size", { $0.model.vocabSize = 1 << 40 }),
            (
                "finetune.epochs",
                {
                    $0.finetune = FineTuneSettings(data: "x.jsonl")
                    $0.finetune?.epochs = 0
                }
            ),
            (
                "finetune.pairs_per_batch",
                {
                    $0.finetune = FineTuneSettings(data: "x.jsonl")
                    $0.finetune?.pairsPerBatch = 0
                }
            ),
        ]
        for (field, edit) in cases {
            var c = Self.config()
            edit(&c)
            #expect { try c.validate(file: "f.json") } throws: { error in
                (error as? ConfigError)?.field == field
            }
        }
    }

    /// The fields the ranks compare have one schema whatever the config holds, and differ where it differs.
    @Test func fingerprintHasAFixedSchema() {
        var a = Self.config(), b = Self.config()
        b.train.learningRate = 2e-3
        b.train.data = "somewhere"
        b.finetune = FineTuneSettings(data: "x.jsonl")
        #expect(a.fingerprintFields.map(\.name) == b.fingerprintFields.map(\.name))
        let differing = zip(a.fingerprintFields, b.fingerprintFields).filter { $0.value != $1.value }.map(\.0.name)
        #expect(
            differing.contains("train.lr") && differing.contains("train.data") && differing.contains("finetune.data"),
            "\(differing)")
        a.train.learningRate = 2e-3
        #expect(
            !zip(a.fingerprintFields, b.fingerprintFields).filter { $0.value != $1.value }.map(\.0.name).contains(
                "train.lr"))
    }
}

@Suite struct OptimizerDefaultsTests {
    /// The config's AdamW keys default to what AdamW itself defaults to (Llama 2 §2.2), so a library caller
    /// and a config file without those keys train alike.
    @Test func configAndOptimizerAgree() {
        #expect(TrainSettings().adamw == AdamWSettings())
    }
}

@Suite struct ModelBlockTests {
    func load(_ model: String) throws -> RunConfig {
        let path = NSTemporaryDirectory() + "model-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try
            #"{"model": {"dim": 64, "n_layers": 1, "n_heads": 4, "max_seq_len": 64\#(model)}, "train": {"seq_len": 64}}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        return try RunConfig.load(path: path)
    }

    /// The model block is declared key by key: the keys only Meta's rule reads are range-checked by name, a
    /// derived default resolves, and the block writes back what it read.
    @Test func modelKeysAreDeclared() throws {
        #expect(try load("").model.ffnHiddenSize == 256 && (try load("").model.nKVHeads) == 4)
        // Meta's rule by hand: 2/3 · 4 · 64 = 170, up to a multiple of 32: 192; times 1.3: 221, up: 224.
        #expect(try load(#", "multiple_of": 32"#).model.ffnHiddenSize == 192)
        #expect(try load(#", "multiple_of": 32, "ffn_dim_multiplier": 1.3"#).model.ffnHiddenSize == 224)
        for (extra, field) in [
            (#", "multiple_of": 0"#, "model.multiple_of"), (#", "ffn_dim_multiplier": -1"#, "model.ffn_dim_multiplier"),
            (#", "dimm": 3"#, "model.dimm"),
        ] {
            #expect { try load(extra) } throws: { ($0 as? ConfigError)?.field == field }
        }
        let config = try load(#", "heads": ["lm_head", "value"]"#)
        let back = try JSONDecoder().decode(RunConfig.self, from: JSONEncoder().encode(config))
        #expect(back.model == config.model && back.model.heads == [.lm, .value])
        #expect(LlamaConfig.fileKeys == ModelBlock.settings.names)
    }
}

@Suite struct DuplicateKeyTests {
    @Test func aKeyGivenTwiceIsRefused() throws {
        let path = NSTemporaryDirectory() + "dup-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "{\"model\": {\"dim\": 32, \"n_layers\": 1, \"n_heads\": 2},\n \"train\": {\"lr\": 1e-3,\n \"lr\": 2e-3}}"
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try RunConfig.load(path: path) } throws: { error in
            (error as? ConfigError)?.field == "train.lr" && "\(error)".contains("lines 2 and 3")
                && "\(error)".contains(path)
        }
    }
}

@Suite struct ParseErrorTests {
    /// A number JSON cannot hold is named as the parser names it, not as "not a JSON object".
    @Test func unrepresentableNumberIsNamed() throws {
        let path = NSTemporaryDirectory() + "big-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try #"{"model": {"dim": 32, "n_layers": 1, "n_heads": 2}, "train": {"lr": 1e400}}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try RunConfig.load(path: path) } throws: { "\($0)".contains("1e400") && "\($0)".contains(path) }
    }
}
