// What a hostile (or unlucky) user does, each case once reproduced against an earlier build: flags and
// config fields out of range, absurd sizes, damaged files, outputs that cannot be written, ranks launched
// with different configs, and checkpoints resumed out of order. Every case must end with exit code 1 or 2
// and a message naming what is wrong: no signal, no hang, no silent success.
import Foundation
import Testing

/// A tiny config with `model` and `train` fields (JSON fragments such as `, "lr": 2`) replacing the
/// defaults below, and `extra` top-level blocks.
func hostileConfig(
    _ dir: String, name: String, model: String = "", train: String = "", extra: String = ""
) throws -> String {
    func object(_ text: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    }
    func fragment(_ text: String) throws -> [String: Any] {
        text.isEmpty ? [:] : try object("{" + text.dropFirst(2) + "}")
    }
    var root = try fragment(extra)
    root["model"] = try object(
        #"{"dim": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 200, "ffn_hidden_size": 64, "max_seq_len": 16}"#
    )
    .merging(try fragment(model)) { $1 }
    root["train"] = try object(
        #"{"seq_len": 16, "micro_batch": 2, "global_batch_tokens": 64, "steps": 3, "lr": 1e-3, "warmup_steps": 1, "seed": 3}"#
    )
    .merging(try fragment(train)) { $1 }
    let path = "\(dir)/\(name).json"
    try JSONSerialization.data(withJSONObject: root).write(to: URL(fileURLWithPath: path))
    return path
}

/// Exit 1 or 2, by a normal exit (not a signal), with `expected` in the message.
func expectRefused(_ r: Run, _ expected: String, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(
        !r.signalled && (r.status == 1 || r.status == 2),
        "\(label): status \(r.status), signalled \(r.signalled)\n\(r.stderr)",
        sourceLocation: sourceLocation)
    #expect(
        r.stderr.contains(expected), "\(label): expected '\(expected)' in:\n\(r.stderr)", sourceLocation: sourceLocation
    )
    #expect(
        !r.stdout.contains("step 1/"), "\(label): it trained before refusing\n\(r.stdout)",
        sourceLocation: sourceLocation)
}

@Suite(.serialized) struct HostileInputTests {
    /// Flags and config fields: each refused before anything trains, naming the flag or the field.
    @Test func everyHostileFlagAndFieldIsRefused() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let base = try hostileConfig(dir, name: "base")
        let flagCases: [([String], String)] = [
            (["--micro-batch", "0"], "--micro-batch"), (["--log-every", "0"], "--log-every"),
            (["--seed", "-1"], "--seed"),
            (["--bucket-mb", "nan"], "--bucket-mb"), (["--bucket-mb", "0"], "--bucket-mb"), (["--lr", "-1"], "--lr"),
            (["--steps", "0"], "--steps"), (["--warmup-steps", "-5"], "--warmup-steps"),
            (["--threads", "0"], "--threads"),
            (["--keep", "1", "--checkpoint-dir", dir + "/ck"], "--keep"),
            (["--collective-timeout", "nan"], "--collective-timeout"),
            (["--background-save=true"], "takes no value"), (["--stepz", "3"], "unknown flag --stepz"),
            (["--on-nonfinite", "maybe"], "--on-nonfinite"), (["--resume", "auto"], "need --checkpoint-dir"),
        ]
        for (flags, expected) in flagCases {
            let r = try run([tool, "pretrain", "--config", base] + flags)
            expectRefused(r, expected, flags.joined(separator: " "))
            #expect(r.stderr.contains("llama-train pretrain --help"), "\(flags): no pointer to the help")
        }
        let fieldCases: [(model: String, train: String, extra: String, field: String)] = [
            (#", "n_layers": 1e15"#, "", "", "n_layers"),
            (#", "ffn_hidden_size": 100000000000"#, "", "", "ffn_hidden_size"),
            (#", "vocab_size": 1000000000000"#, "", "", "vocab_size"),
            (#", "dim": 1000000"#, "", "", "above the largest"),
            ("", #", "global_batch_tokens": 4611686018427387904"#, "", "train.global_batch_tokens"),
            ("", #", "bucket_mb": 1e300"#, "", "train.bucket_mb"), ("", #", "grad_clip": -1"#, "", "train.grad_clip"),
            ("", #", "beta1": 1.5"#, "", "train.beta1"), ("", #", "weight_decay": -5"#, "", "train.weight_decay"),
            ("", #", "seed": -1"#, "", "train.seed"),
            ("", #", "data_weights": {"web": 1e308}"#, "", "train.data_weights.web"),
            ("", #", "eps": 0"#, "", "train.eps"), ("", #", "min_lr_ratio": 2"#, "", "train.min_lr_ratio"),
            // Within every bound, but 14 TB of parameters and moments: refused with the figure and the machine's memory.
            (
                #", "dim": 16384, "n_layers": 200, "n_heads": 128, "ffn_hidden_size": 65536"#, "", "",
                "but this machine has"
            ),
        ]
        for (i, c) in fieldCases.enumerated() {
            let config = try hostileConfig(dir, name: "field\(i)", model: c.model, train: c.train, extra: c.extra)
            expectRefused(try run([tool, "pretrain", "--config", config]), c.field, "\(c.model)\(c.train)")
        }
        let help = try run([tool, "pretrain", "--help"])
        #expect(
            help.status == 0 && help.stdout.contains("usage: llama-train pretrain")
                && help.stdout.contains("--bucket-mb X"), "\(help.stdout)")
        for flags in [["--max-tokens", "9223372036854775807"], ["--seed", "-1"], ["--top-p", "0"]] {
            expectRefused(try run([tool, "generate", "--checkpoint", dir] + flags), flags[0], "generate \(flags)")
        }
    }

    /// Fine-tuning edits are validated too: SFT epochs 0, reward pairs_per_batch 0.
    @Test func fineTuneFieldsAreRefused() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let finetune = { (field: String) in #", "finetune": {"data": "none.jsonl", \#(field)}"# }
        let sft = try hostileConfig(
            dir, name: "sft", train: #", "tokenizer": "\#(fixtureTokenizer)""#, extra: finetune(#""epochs": 0"#))
        expectRefused(try run([tool, "sft", "--config", sft]), "finetune.epochs", "sft epochs 0")
        let rm = try hostileConfig(
            dir, name: "rm", train: #", "tokenizer": "\#(fixtureTokenizer)""#, extra: finetune(#""pairs_per_batch": 0"#)
        )
        expectRefused(
            try run([tool, "reward", "--config", rm]), "finetune.pairs_per_batch", "reward pairs_per_batch 0")
    }

    /// Damaged or lying files: Hugging Face configs, safetensors headers, shard headers, data indexes, tokens
    /// outside the vocabulary, and an --out that is a file. Each is found before the first step.
    @Test func damagedFilesAreRefusedBeforeTraining() throws {
        let tool = try toolPath()
        let dir = try scratch()
        // Hugging Face directories with a bad config or a safetensors shape of [2^62, 4].
        let hf =
            #"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 200, "max_position_embeddings": 16}"#
        for (name, edit, expected) in [
            ("layers-true", ("\"num_hidden_layers\": 1", "\"num_hidden_layers\": true"), "num_hidden_layers"),
            ("huge", ("\"hidden_size\": 32", "\"hidden_size\": 1000000000"), "hidden_size"),
        ] {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(name)", withIntermediateDirectories: true)
            try hf.replacingOccurrences(of: edit.0, with: edit.1).write(
                toFile: "\(dir)/\(name)/config.json", atomically: true, encoding: .utf8)
            expectRefused(try run([tool, "generate", "--checkpoint", "\(dir)/\(name)"]), expected, name)
        }
        try FileManager.default.createDirectory(atPath: dir + "/shape", withIntermediateDirectories: true)
        try hf.write(toFile: dir + "/shape/config.json", atomically: true, encoding: .utf8)
        let header = Data(
            #"{"model.embed_tokens.weight": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 16]}}"#
                .utf8)
        var file = Data(withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) })
        file += header + Data(count: 16)
        try file.write(to: URL(fileURLWithPath: dir + "/shape/model.safetensors"))
        expectRefused(
            try run([tool, "generate", "--checkpoint", dir + "/shape"]), "4611686018427387904", "safetensors shape")

        // Prepared data: a shard whose header count is all 0xFF, an index listing a source twice, and tokens
        // beyond a model vocabulary smaller than the tokenizer's.
        let text = (0..<200).map { "document \($0): the quick brown fox jumps over the lazy dog" }.joined(
            separator: "\n%\n")
        try text.write(toFile: dir + "/corpus.txt", atomically: true, encoding: .utf8)
        let prep = try run([
            tool, "prepare", "--tokenizer", fixtureTokenizer, "--input", "books=" + dir + "/corpus.txt", "--out",
            dir + "/data",
            "--delimiter", "%",
        ])
        try #require(prep.status == 0, "\(prep.stderr)")
        let vocab = 2000  // the fixture tokenizer's size
        let data = #", "data": "\#(dir)/data", "tokenizer": "\#(fixtureTokenizer)""#
        let small = try hostileConfig(dir, name: "small-vocab", model: #", "vocab_size": 100"#, train: data)
        let r = try run([tool, "pretrain", "--config", small])
        // Refused either as a vocabulary smaller than the tokenizer's or as tokens outside it: before step 1.
        expectRefused(r, "vocab", "tokens beyond the vocabulary")
        let ok = try hostileConfig(dir, name: "ok", model: #", "vocab_size": \#(vocab)"#, train: data)
        let outFile = dir + "/a-file"
        try "x".write(toFile: outFile, atomically: true, encoding: .utf8)
        expectRefused(
            try run([tool, "pretrain", "--config", ok, "--out", outFile]), "--out names a file", "--out a file")
        let readOnly = dir + "/read-only"
        try FileManager.default.createDirectory(atPath: readOnly, withIntermediateDirectories: true)
        if getuid() != 0 {  // root writes anywhere; the check is for everyone else
            chmod(readOnly, 0o500)
            expectRefused(
                try run([tool, "pretrain", "--config", ok, "--checkpoint-dir", readOnly]), "not writable",
                "read-only checkpoints")
        }
        let index = dir + "/data/index.json"
        let original = try String(contentsOfFile: index, encoding: .utf8)
        // Damaged tokens in an index that records no maximum (as version-1 indexes did): nothing scans the shard
        // at start-up (at 2T tokens that would be every rank reading the corpus), so they are found as a window
        // draws them, naming the shard and the token. Every token is damaged, so the first window from it does.
        let shard =
            dir + "/data/"
            + (try FileManager.default.contentsOfDirectory(atPath: dir + "/data").sorted().first {
                $0.hasPrefix("books-")
            }!)
        let pristine = FileManager.default.contents(atPath: shard)!
        var poked = [UInt8](pristine)
        for i in 64..<poked.count { poked[i] = 0xFF }
        try Data(poked).write(to: URL(fileURLWithPath: shard))
        let legacy = original.split(separator: "\n").filter { !$0.contains("max_token_id") }.joined(separator: "\n")
        try legacy.write(toFile: index, atomically: true, encoding: .utf8)
        expectRefused(
            try run([tool, "pretrain", "--config", ok]), "has id 65535, outside the model's vocabulary",
            "token beyond the vocabulary")
        try pristine.write(to: URL(fileURLWithPath: shard))
        let object = try JSONSerialization.jsonObject(with: Data(original.utf8)) as! [String: Any]
        var twice = object
        twice["sources"] = (object["sources"] as! [Any]) + (object["sources"] as! [Any])
        try JSONSerialization.data(withJSONObject: twice).write(to: URL(fileURLWithPath: index))
        expectRefused(try run([tool, "pretrain", "--config", ok]), "listed twice", "duplicated source")
        try original.write(toFile: index, atomically: true, encoding: .utf8)
        var bytes = [UInt8](pristine)
        for i in 16..<24 { bytes[i] = 0xFF }
        try Data(bytes).write(to: URL(fileURLWithPath: shard))
        expectRefused(try run([tool, "pretrain", "--config", ok]), shard, "shard count 0xFF")
    }

    /// A full disk under --metrics: the error names the file and the step (not a bare "No space left on
    /// device"). The disk is a 64 KiB tmpfs filled up first, which only root may mount.
    @Test(.enabled(if: SmallFilesystem.canMount, "mounting a tmpfs needs root (CAP_SYS_ADMIN)"))
    func aFullDiskUnderMetricsNamesTheFileAndStep() throws {
        let dir = try scratch()
        let full = dir + "/full"
        try SmallFilesystem.mount(at: full)
        defer { SmallFilesystem.unmount(full) }
        FileManager.default.createFile(atPath: full + "/filler", contents: Data(count: 64 << 10))
        let r = try run([
            try toolPath(), "pretrain", "--config", try writeTinyConfig(dir), "--metrics", full + "/m.jsonl",
        ])
        #expect(!r.signalled && r.status == 1, "\(r.stderr)")
        #expect(
            r.stderr.contains(full + "/m.jsonl") && r.stderr.contains("step 1's metrics")
                && r.stderr.contains("No space left on device"), "\(r.stderr)")
    }

    /// A symbolic link loop or a dangling link, wherever a path is read, is named as such (not "cannot read
    /// the file", "NSCocoaErrorDomain error 256" or "run prepare first").
    @Test func linkLoopsAndDanglingLinksAreNamed() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let loop = dir + "/loop", dangling = dir + "/dangling"
        try FileManager.default.createSymbolicLink(atPath: loop, withDestinationPath: dir + "/loop2")
        try FileManager.default.createSymbolicLink(atPath: dir + "/loop2", withDestinationPath: loop)
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: dir + "/gone")
        let config = try writeTinyConfig(dir, extra: #", "data": "\#(loop)", "tokenizer": "\#(fixtureTokenizer)""#)
        try String(contentsOfFile: config, encoding: .utf8).replacingOccurrences(
            of: "\"vocab_size\": 200", with: "\"vocab_size\": 2000"
        ).write(toFile: config, atomically: true, encoding: .utf8)
        let saysLoop = "symbolic link loop"
        for (label, arguments, expected) in [
            ("--config", ["pretrain", "--config", loop], saysLoop),
            ("--config dangling", ["pretrain", "--config", dangling], "dangling symbolic link"),
            ("train.data", ["pretrain", "--config", config], saysLoop),
            ("--tokenizer", ["tokenize", "--tokenizer", loop], saysLoop),
            (
                "prepare --input", ["prepare", "--tokenizer", fixtureTokenizer, "--input", loop, "--out", dir + "/o"],
                saysLoop
            ),
            ("export --checkpoint", ["export", "--checkpoint", loop, "--out", dir + "/hf"], saysLoop),
            ("generate --checkpoint", ["generate", "--checkpoint", loop, "--prompt", "hi"], saysLoop),
        ] {
            expectRefused(try run([tool] + arguments), expected, label)
        }
    }

    /// Ranks launched with different configs (an MPMD launch) stop at start-up, naming every differing field
    /// and the ranks; so does prepare with different inputs per rank.
    @Test func ranksThatDisagreeAreStoppedAtStartUp() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let a = try hostileConfig(dir, name: "a")
        let b = try hostileConfig(
            dir, name: "b", train: #", "bucket_mb": 2, "grad_clip": 0.5, "synthetic_ignore_fraction": 0.2"#)
        let r = try run([
            "mpirun", "--oversubscribe", "-np", "1", tool, "pretrain", "--config", a, "--steps", "4", "--lr", "2e-3",
            "--seed", "9", "--global-batch-tokens", "128", ":", "-np", "1", tool, "pretrain", "--config", b,
        ])
        #expect(r.status != 0)
        let output = r.stdout + r.stderr
        for field in [
            "train.bucket_mb", "train.steps", "train.lr", "train.grad_clip", "train.seed", "train.global_batch_tokens",
            "train.synthetic_ignore_fraction",
        ] {
            #expect(
                output.contains(field + ":") && output.contains("rank(s) 1 differ"), "\(field) not named:\n\(output)")
        }
        #expect(
            !output.contains("step 1/") && !output.contains("double free") && !output.contains("stack smashing"),
            "\(output)")

        try "one\n".write(toFile: dir + "/x.txt", atomically: true, encoding: .utf8)
        try "two\n".write(toFile: dir + "/y.txt", atomically: true, encoding: .utf8)
        let p = try run([
            "mpirun", "--oversubscribe", "-np", "1", tool, "prepare", "--tokenizer", fixtureTokenizer, "--input",
            "s=" + dir + "/x.txt",
            "--out", dir + "/d", ":", "-np", "1", tool, "prepare", "--tokenizer", fixtureTokenizer, "--input",
            "s=" + dir + "/y.txt",
            "--out", dir + "/d",
        ])
        #expect(p.status != 0 && (p.stdout + p.stderr).contains("--input 1: rank 0 has s="), "\(p.stdout)\(p.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/d/index.json"))
        // The same inputs with a different tokenizer on rank 1: it would write mixed tokens under rank 0's hash.
        let text = (0..<300).map { "line \($0): the quick brown fox jumps over the lazy dog" }.joined(separator: "\n")
        try text.write(toFile: dir + "/corpus.txt", atomically: true, encoding: .utf8)
        let trained = try run([
            tool, "tokenizer", "train", "--input", dir + "/corpus.txt", "--vocab-size", "300", "--out",
            dir + "/other.model",
        ])
        try #require(trained.status == 0, "\(trained.stderr)")
        let t = try run([
            "mpirun", "--oversubscribe", "-np", "1", tool, "prepare", "--tokenizer", fixtureTokenizer, "--input",
            "s=" + dir + "/x.txt",
            "--out", dir + "/e", ":", "-np", "1", tool, "prepare", "--tokenizer", dir + "/other.model", "--input",
            "s=" + dir + "/x.txt",
            "--out", dir + "/e",
        ])
        #expect(
            t.status != 0 && (t.stdout + t.stderr).contains("tokenizer (SHA-256): rank 0 has"), "\(t.stdout)\(t.stderr)"
        )
        #expect(!FileManager.default.fileExists(atPath: dir + "/e/index.json"))
    }

    /// A SIGTERM that arrives while a fresh run is still starting (MPI, memory, data) ends it with exit 75 before
    /// its first step, saying there is nothing to save: never the default exit 143 that loses the run without a
    /// word, and never a step (20 minutes at 7B) the scheduler would not wait for. The relaunch starts afresh.
    @Test func aSignalDuringStartUpEndsTheRunBeforeItsFirstStep() throws {
        let dir = try scratch()
        let config = try hostileConfig(dir, name: "run", train: #", "steps": 100000"#)
        let job = try BackgroundJob(
            [try toolPath(), "pretrain", "--config", config, "--checkpoint-dir", dir + "/ck", "--log-every", "1"],
            in: dir)
        try #require(job.wait(for: 30) { BackgroundJob.catchesSIGTERM(job.process.processIdentifier) })
        kill(job.process.processIdentifier, SIGTERM)
        #expect(job.finish() == 75 && job.process.terminationReason == .exit, "\(job.stdout)\(job.stderr)")
        #expect(
            job.stdout.contains("preempted (SIGTERM): no step was taken, so there is nothing to save"), "\(job.stdout)")
        #expect(!job.stdout.contains(" 1/100000 |"), "\(job.stdout)")
        #expect(committedSteps(dir + "/ck").isEmpty)
    }

    /// Resuming from an older checkpoint sets the newer ones aside (kept, out of --resume auto's way), the
    /// checkpoint it commits survives pruning, the next launch continues this run, and the metrics file keeps
    /// one row per step of it.
    @Test func resumingFromAnOlderCheckpointContinuesThatRun() throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir, steps: 5)
        let ck = dir + "/ck", metrics = dir + "/m.jsonl"
        _ = try pretrain(
            [], config,
            [
                "--checkpoint-dir", ck, "--checkpoint-every", "1", "--keep", "3", "--stop-after", "4", "--metrics",
                metrics,
            ])
        let older = try pretrain(
            [], config,
            [
                "--checkpoint-dir", ck, "--keep", "3", "--resume", ck + "/step-00000002", "--stop-after", "3",
                "--checkpoint-every", "1", "--metrics", metrics,
            ])
        #expect(older.stdout.contains("set aside \(ck)/step-00000004"), "\(older.stdout)")
        let names = try FileManager.default.contentsOfDirectory(atPath: ck)
        #expect(names.contains("step-00000003") && names.filter { $0.hasPrefix("abandoned-") }.count == 2, "\(names)")
        let rest = try pretrain([], config, ["--checkpoint-dir", ck, "--metrics", metrics])
        #expect(rest.stdout.contains("resumed from \(ck)/step-00000003 (step 3"), "\(rest.stdout)")
        let steps = try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n").map {
            (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["step"] as! Int
        }
        #expect(steps == [1, 2, 3, 4, 5], "metrics rows: \(steps)")
        // A manifest whose step was edited to -5 (its checksum now wrong) is refused when named explicitly.
        let manifest = ck + "/step-00000005/manifest.json"
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
        try text.replacingOccurrences(of: "\"step\" : 5", with: "\"step\" : -5").write(
            toFile: manifest, atomically: true, encoding: .utf8)
        let edited = try run([
            try toolPath(), "pretrain", "--config", config, "--checkpoint-dir", dir + "/ck2", "--resume",
            ck + "/step-00000005",
        ])
        expectRefused(edited, "manifest", "edited manifest")
    }
}

/// A tmpfs of 64 KiB, for disk-full tests (/dev/full does not stop root from creating files beside it).
enum SmallFilesystem {
    static let canMount: Bool = {
        let probe = NSTemporaryDirectory() + "llama-train-tmpfs-probe-\(getpid())"
        guard (try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)) != nil,
            (try? mount(at: probe)) != nil
        else { return false }
        unmount(probe)
        try? FileManager.default.removeItem(atPath: probe)
        return true
    }()

    static func mount(at path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let r = try run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", path])
        try #require(r.status == 0, "mount -t tmpfs at \(path): \(r.stderr)")
    }

    static func unmount(_ path: String) { _ = try? run(["umount", path]) }
}
