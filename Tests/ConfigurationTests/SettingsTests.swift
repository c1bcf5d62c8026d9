// The declared settings of the train and finetune blocks: JSON written as before the declarations (checkpoints
// embed it), round trips, refusals that name the key (unknown, out of range, a word an enum lacks, required),
// and help notes built from the declaration.
import Configuration
import Foundation
import Model
import Support
import Testing

@Suite struct SettingsTests {
    static func encoded<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static func decodeTrain(_ json: String) throws -> TrainSettings {
        try JSONDecoder().decode(TrainSettings.self, from: Data(json.utf8))
    }

    /// What the hand-written encode(to:) produced before the declarations (captured from that build): older
    /// checkpoints must read, and hash, the same.
    @Test func encodingIsUnchanged() throws {
        #expect(
            try Self.encoded(TrainSettings()) == #"{"beta1":0.9,"beta2":0.95,"bucket_mb":25,"data_weights":{},"#
                + #""eps":1e-05,"global_batch_tokens":4194304,"grad_clip":1,"lr":0.0003,"micro_batch":4,"#
                + #""min_lr_ratio":0.1,"on_nonfinite":"stop","recompute":"none","seed":1337,"seq_len":256,"#
                + #""sharding":"none","steps":1000,"synthetic_ignore_fraction":0,"warmup_steps":2000,"#
                + #""weight_decay":0.1}"#)
        var t = TrainSettings()
        (t.gradReduce, t.precision, t.data, t.dataWeights, t.tokenizer) = (.bf16, .fp32, "d", ["a": 2], "t")
        #expect(
            try Self.encoded(t) == #"{"beta1":0.9,"beta2":0.95,"bucket_mb":25,"data":"d","data_weights":{"a":2},"#
                + #""eps":1e-05,"global_batch_tokens":4194304,"grad_clip":1,"grad_reduce":"bf16","lr":0.0003,"#
                + #""micro_batch":4,"min_lr_ratio":0.1,"on_nonfinite":"stop","precision":"fp32","recompute":"none","#
                + #""seed":1337,"seq_len":256,"sharding":"none","steps":1000,"synthetic_ignore_fraction":0,"#
                + #""tokenizer":"t","warmup_steps":2000,"weight_decay":0.1}"#)
        var f = FineTuneSettings(data: "x.jsonl")
        #expect(
            try Self.encoded(f) == #"{"data":"x.jsonl","epochs":2,"margin":"small","pairs_per_batch":512,"#
                + #""separator":"<sep>","template":"separator","warmup_fraction":0.03}"#)
        (f.evalData, f.initFrom) = ("e", "i")
        #expect(
            try Self.encoded(f) == #"{"data":"x.jsonl","epochs":2,"eval_data":"e","init_from":"i","#
                + #""margin":"small","pairs_per_batch":512,"separator":"<sep>","template":"separator","warmup_fraction":0.03}"#
        )
    }

    /// Every key away from its default survives encode → decode; an empty object decodes to the defaults.
    @Test func roundTripAndDefaults() throws {
        var t = TrainSettings()
        (t.seqLen, t.microBatch, t.seed, t.learningRate) = (64, 3, 1 << 63, 2e-3)
        (t.adamw.beta2, t.adamw.eps) = (0.99, 1e-8)
        (t.recompute, t.sharding, t.precision, t.gradReduce, t.onNonFinite) = (.layer, .full, .bf16, .bf16, .skip)
        (t.data, t.dataWeights, t.tokenizer, t.syntheticIgnoreFraction) = ("d", ["web": 0.5, "books": 2], "tok", 0.25)
        #expect(try Self.decodeTrain(Self.encoded(t)) == t)
        #expect(try Self.decodeTrain("{}") == TrainSettings())
        var f = FineTuneSettings(data: "a.jsonl")
        (f.evalData, f.initFrom, f.epochs, f.template) = ("b", "c", 3, .llama2Chat)
        (f.separator, f.margin, f.pairsPerBatch, f.warmupFraction) = ("<x>", .large, 16, 0.5)
        #expect(try JSONDecoder().decode(FineTuneSettings.self, from: Data(Self.encoded(f).utf8)) == f)
        // A JSON null reads as absent for an optional key.
        #expect(try Self.decodeTrain(#"{"precision": null}"#).precision == nil)
    }

    /// Each refusal names the key: unknown (listing the known keys), a word an enum lacks (listing its words),
    /// a missing required key, a negative seed.
    @Test func refusalsNameTheKey() throws {
        let dir = NSTemporaryDirectory() + "settings-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let model =
            #""model": {"dim": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 100, "ffn_hidden_size": 64, "#
            + #""max_seq_len": 16}"#
        func refusal(_ blocks: String) throws -> ConfigError? {
            let path = dir + "/c.json"
            try "{\(model), \(blocks)}".write(toFile: path, atomically: true, encoding: .utf8)
            do {
                _ = try RunConfig.load(path: path)
                return nil
            } catch let error as ConfigError {
                #expect(error.file == path, "\(error)")
                return error
            }
        }
        let unknown = try refusal(#""train": {"seq_len": 16, "stepz": 3}"#)
        #expect(
            unknown?.field == "train.stepz"
                && unknown?.message.contains("known keys: beta1, beta2, bucket_mb") == true)
        let unknownFineTune = try refusal(#""finetune": {"data": "x.jsonl", "epoch": 3}"#)
        #expect(unknownFineTune?.field == "finetune.epoch" && unknownFineTune?.message.contains("epochs") == true)
        let margin = try refusal(#""train": {"seq_len": 16}, "finetune": {"data": "x", "margin": "huge"}"#)
        #expect(margin?.field == "finetune.margin" && margin?.message == "is 'huge'; use none, small or large")
        let template = try refusal(#""train": {"seq_len": 16}, "finetune": {"data": "x", "template": "chatml"}"#)
        #expect(
            template?.field == "finetune.template"
                && template?.message == "is 'chatml'; use separator or llama2-chat")
        let sharding = try refusal(#""train": {"seq_len": 16, "sharding": "zero3"}"#)
        #expect(
            sharding?.field == "train.sharding"
                && sharding?.message.contains("none, optimizer, gradients or full") == true)
        #expect(try refusal(#""train": {"seq_len": 16}, "finetune": {"epochs": 3}"#)?.field == "finetune.data")
        #expect(try refusal(#""train": {"seq_len": 16, "seed": -1}"#)?.field == "train.seed")
        #expect(try refusal(#""train": {"seq_len": "16"}"#)?.field == "train.seq_len")
        #expect(try refusal(#""train": {"seq_len": 16, "global_batch_tokens": 64, "micro_batch": 2}"#) == nil)
    }

    /// Every declared range is enforced: a value just outside each end is refused naming the key (by the range
    /// check, with what the key accepts and its default, or by decoding, for a type that cannot hold it); the
    /// value at each inclusive end passes.
    @Test func everyDeclaredRangeIsEnforced() throws {
        func values(_ kind: ValueKind) -> (outside: [String], inside: [String]) {
            switch kind {
            case let .int(min, max):
                let top = max == Int.max ? [] : [max]
                return ([min - 1].map(String.init) + top.map { String($0 + 1) }, ([min] + top).map(String.init))
            case let .number(min, inclusive, max, maxInclusive):
                let below = !min.isFinite ? [] : inclusive ? [min - 1e-3 * Swift.max(1, abs(min))] : [min]
                let above = !max.isFinite ? [] : maxInclusive ? [max * 1.5 + 1] : [max]
                let ends = (inclusive && min.isFinite ? [min] : []) + (max.isFinite && maxInclusive ? [max] : [])
                return ((below + above).map { "\($0)" }, ends.map { "\($0)" })
            default: return ([], [])
            }
        }
        var refused = 0
        func probe<Root: Decodable>(_ block: SettingsBlock<Root>, _ type: Root.Type, prefix: String) throws {
            for setting in block.settings {
                let (outside, inside) = values(setting.kind)
                func check(_ x: String) throws {
                    let json = "{\(prefix)\"\(setting.name)\": \(x)}"
                    let root = try JSONDecoder().decode(Root.self, from: Data(json.utf8))
                    try block.checkRanges(root)
                }
                for x in outside {
                    do {
                        try check(x)
                        Issue.record("\(block.section).\(setting.name) \(x) was not refused")
                    } catch let e as ConfigError {
                        #expect(
                            e.field == "\(block.section).\(setting.name)"
                                && e.message.contains(setting.kind.accepts)
                                && e.message.contains("(default \(setting.defaultText ?? "-"))"), "\(e)")
                        refused += 1
                    } catch let e as DecodingError {
                        #expect(e.fieldPath == setting.name, "\(e)")
                        refused += 1
                    }
                }
                for x in inside {
                    do { try check(x) } catch {
                        Issue.record("\(block.section).\(setting.name) \(x) was refused: \(error)")
                    }
                }
            }
        }
        try probe(TrainSettings.settings, TrainSettings.self, prefix: "")
        try probe(FineTuneSettings.settings, FineTuneSettings.self, prefix: #""data": "x", "#)
        #expect(refused >= 30, "only \(refused) range ends probed")
    }

    /// A flag's help tail is what the declaration accepts and its default; an absent default says what
    /// absence means.
    @Test func helpNotesCarryTheDeclaredDefault() {
        #expect(TrainSettings.settings["lr"].helpNote == " (a number > 0 and ≤ 10; default 0.0003)")
        #expect(TrainSettings.settings["micro_batch"].helpNote == " (an integer in 1...1048576; default 4)")
        #expect(
            TrainSettings.settings["precision"].helpNote
                == " (fp32 or bf16; default: bf16 where the CPU has AVX-512 BF16 or AMX, else fp32)")
        #expect(FineTuneSettings.settings["separator"].helpNote == " (default <sep>)")
        #expect(TrainSettings.settings.setting(\.adamw.beta1).name == "beta1")
        #expect(TrainSettings().adamw.eps == 1e-5 && FineTuneSettings(data: "x").margin == .small)
    }
}
