// The llama-train executable as a user runs it, under mpirun where ranks matter: the tokenizer commands,
// data preparation with 1 and 2 ranks, the benchmark's JSON line, and errors that name what is wrong.
import Foundation
import Testing

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The llama-train that `swift build` put beside the tests.
func toolPath() throws -> String {
    let candidates = [".build/debug/llama-train", ".build/release/llama-train"].map { packageRoot + "/" + $0 }
    return try #require(
        candidates.first { FileManager.default.isExecutableFile(atPath: $0) }, "build llama-train first")
}

/// llama-train's fault-injecting twin (Tests/FaultInjection): `--nan-at-step K`, `--die-in-checkpoint RANK`.
func faultyToolPath() throws -> String {
    let candidates = [".build/debug/FaultInjection", ".build/release/FaultInjection"].map { packageRoot + "/" + $0 }
    return try #require(
        candidates.first { FileManager.default.isExecutableFile(atPath: $0) }, "build FaultInjection first")
}

struct Run {
    let status: Int32
    /// Ended by a signal (SIGILL, SIGSEGV, SIGABRT…), not by exit: never acceptable for bad input.
    var signalled = false
    let stdout: String
    let stderr: String
}

/// Runs a command with a time limit, so a hang fails the test instead of the suite. Output goes through
/// files, which never fill up the way pipes do.
func run(
    _ arguments: [String], stdin: String = "", timeout: TimeInterval = 120, environment extra: [String: String] = [:]
) throws -> Run {
    let dir = NSTemporaryDirectory() + "llama-train-run-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for name in ["in", "out", "err"] { FileManager.default.createFile(atPath: dir + "/" + name, contents: nil) }
    try Data(stdin.utf8).write(to: URL(fileURLWithPath: dir + "/in"))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    // The test process may itself be an MPI singleton (the Distributed tests share it); its OMPI_/PMIX_
    // variables would make a child mpirun think it runs inside that job.
    var environment = ProcessInfo.processInfo.environment.filter { key, _ in
        !["OMPI_", "PMIX_", "OPAL_", "ORTE_"].contains { key.hasPrefix($0) }
    }
    environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    environment.merge(extra) { $1 }
    process.environment = environment
    process.standardInput = FileHandle(forReadingAtPath: dir + "/in")
    process.standardOutput = FileHandle(forWritingAtPath: dir + "/out")
    process.standardError = FileHandle(forWritingAtPath: dir + "/err")
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    if process.isRunning {
        process.terminate()
        Issue.record("\(arguments.joined(separator: " ")) did not finish within \(timeout) s")
    }
    process.waitUntilExit()
    func read(_ name: String) -> String {
        String(decoding: FileManager.default.contents(atPath: dir + "/" + name) ?? Data(), as: UTF8.self)
    }
    return Run(
        status: process.terminationStatus, signalled: process.terminationReason == .uncaughtSignal,
        stdout: read("out"), stderr: read("err"))
}

let fixtureTokenizer = packageRoot + "/../shared/fixtures/spm-bpe/tokenizer.model"

func scratch() throws -> String {
    let path = NSTemporaryDirectory() + "llama-train-cli-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite(.serialized) struct CommandLineTests {
    @Test func tokenizeThenDetokenize() throws {
        let tool = try toolPath()
        let texts = ["Hello world", "  spaces\tand 12345 digits", "日本語 🦙"]
        let input = texts.map { "{\"text\": \"\($0.replacingOccurrences(of: "\t", with: "\\t"))\"}" }.joined(
            separator: "\n")
        let encoded = try run([tool, "tokenize", "--tokenizer", fixtureTokenizer, "--bos"], stdin: input)
        #expect(encoded.status == 0, "\(encoded.stderr)")
        let objects = encoded.stdout.split(separator: "\n").map {
            try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
        #expect(objects.count == 3)
        #expect(objects.allSatisfy { ($0["ids"] as! [Int]).first == 1 && ($0["pieces"] as! [String]).first == "<s>" })
        let decoded = try run([tool, "detokenize", "--tokenizer", fixtureTokenizer], stdin: encoded.stdout)
        let back = decoded.stdout.split(separator: "\n").map {
            (try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["text"] as! String
        }
        #expect(back == texts)
        let bad = try run([tool, "tokenize", "--tokenizer", fixtureTokenizer], stdin: "{\"txt\": 1}")
        // Windows line ends on standard input give the same output; bytes that are not UTF-8 are refused by
        // line and byte, never replaced.
        let crlf = try run(
            [tool, "tokenize", "--tokenizer", fixtureTokenizer, "--bos"],
            stdin: input.replacingOccurrences(of: "\n", with: "\r\n"))
        // Compared as objects: JSONSerialization's key order differs between processes.
        func ids(_ out: String) -> [[Int]] {
            out.split(separator: "\n").map {
                (try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["ids"] as! [Int]
            }
        }
        #expect(
            crlf.status == 0 && ids(crlf.stdout) == ids(encoded.stdout) && ids(crlf.stdout).count == 3, "\(crlf.stderr)"
        )
        let latin1 = NSTemporaryDirectory() + "latin1-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: latin1) }
        try (Data("{\"text\": \"ok\"}\n{\"text\": \"caf".utf8) + Data([0xE9]) + Data("\"}\n".utf8)).write(
            to: URL(fileURLWithPath: latin1))
        let invalid = try run([
            "sh", "-c", "\"$0\" tokenize --tokenizer \"$1\" < \"$2\"", tool, fixtureTokenizer, latin1,
        ])
        #expect(
            invalid.status == 1 && invalid.stderr.contains("standard input:2:14: not valid UTF-8"), "\(invalid.stderr)")
        #expect(bad.status != 0 && bad.stderr.contains("line 1"))
    }

    /// Each source's token stream, read in index order, is the same for 1, 2 and 3 ranks and for gzip and
    /// zstd copies of the inputs; each rank writes its own shards.
    @Test func prepareGivesTheSameTokenStreamForAnyRankCountAndCompression() throws {
        let tool = try toolPath()
        let dir = try scratch()
        try (0..<40).map { "fortune number \($0): \(String(repeating: "the quick brown fox ", count: $0 % 7))" }
            .joined(separator: "\n%\n").write(toFile: dir + "/fortunes", atomically: true, encoding: .utf8)
        try (0..<300).map {
            "{\"text\": \"document \($0) with digits 3.14159 \(String(repeating: "é", count: $0 % 11))\"}"
        }.joined(separator: "\n")
            .write(toFile: dir + "/web.jsonl", atomically: true, encoding: .utf8)
        let compress = Process()
        compress.executableURL = URL(fileURLWithPath: "/bin/sh")
        compress.arguments = [
            "-c", "gzip -c \(dir)/web.jsonl > \(dir)/web.jsonl.gz && zstd -q -c \(dir)/fortunes > \(dir)/fortunes.zst",
        ]
        try compress.run()
        compress.waitUntilExit()
        let args = ["prepare", "--tokenizer", fixtureTokenizer, "--delimiter", "%", "--shard-tokens", "300", "--input"]
        let plainInputs = ["quotes=\(dir)/fortunes", "\(dir)/web.jsonl"],
            packedInputs = ["quotes=\(dir)/fortunes.zst", "\(dir)/web.jsonl.gz"]
        let one = try run([tool] + args + plainInputs + ["--out", dir + "/one"])
        #expect(one.status == 0, "\(one.stderr)")
        let expected = try tokenStreams(dir + "/one")
        #expect(expected.keys.sorted() == ["quotes", "web"] && expected["web"]!.count > 3000)
        for (name, ranks, inputs) in [("two", 2, plainInputs), ("three", 3, plainInputs), ("packed", 2, packedInputs)] {
            let r = try run(mpirunFast + ["-np", "\(ranks)", tool] + args + inputs + ["--out", "\(dir)/\(name)"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try tokenStreams("\(dir)/\(name)") == expected, "\(name)")
        }
        // The large input was cut between the ranks: shards of web from each of its three ranges.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/three")
        #expect(
            Set(files.filter { $0.hasPrefix("web-") }.map { $0.split(separator: "-")[2] }) == ["0000", "0001", "0002"])

        let missing = try run([
            tool, "prepare", "--tokenizer", fixtureTokenizer, "--input", dir + "/nope", "--out", dir + "/x",
        ])
        #expect(missing.status != 0 && missing.stderr.contains(dir + "/nope"))
    }

    /// A Parquet corpus (pyarrow, snappy, 17 row groups) prepares to the same token stream as the same documents
    /// in JSON Lines on 1, 2 and 3 ranks, to identical shards on 1 rank, each rank reading its own row groups;
    /// `tokenizer train` learns the same model from its text column as from the JSON Lines field.
    @Test func parquetPreparesAndTrainsLikeTheSameCorpusAsJSONLines() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let cases = packageRoot + "/scripts/parquet-cases.py"
        let made = try run(["python3", cases, dir], timeout: 120)
        try #require(made.status == 0, "python3 with pyarrow is needed (make test installs it): \(made.stderr)")
        let args = ["prepare", "--tokenizer", fixtureTokenizer, "--shard-tokens", "4000", "--input"]
        for (name, input) in [("json", "corpus.jsonl"), ("one", "corpus.parquet")] {
            let r = try run([tool] + args + ["\(dir)/\(input)", "--out", "\(dir)/\(name)"])
            #expect(r.status == 0, "\(r.stderr)")
        }
        let expected = try tokenStreams(dir + "/json")
        #expect(expected["corpus"]!.count > 50_000)
        #expect(try tokenStreams(dir + "/one") == expected)
        let shards = try FileManager.default.contentsOfDirectory(atPath: dir + "/json").filter { $0.hasSuffix(".bin") }
        #expect(shards.count > 10)
        for shard in shards {
            #expect(
                FileManager.default.contents(atPath: "\(dir)/one/\(shard)")
                    == FileManager.default.contents(atPath: "\(dir)/json/\(shard)"), "\(shard)")
        }
        for ranks in [2, 3] {
            let out = "\(dir)/ranks\(ranks)"
            let r = try run(mpirunFast + ["-np", "\(ranks)", tool] + args + ["\(dir)/corpus.parquet", "--out", out])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try tokenStreams(out) == expected, "\(ranks) ranks")
            let parts = Set(
                try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasSuffix(".bin") }
                    .map { $0.split(separator: "-")[2] })
            #expect(parts.count == ranks, "every rank read row groups: \(parts)")
        }
        func train(_ input: String, _ extra: [String] = []) throws -> Data? {
            let out = "\(dir)/\(input).model"
            let r = try run(
                [tool, "tokenizer", "train", "--input", "\(dir)/\(input)", "--vocab-size", "320", "--out", out]
                    + extra)
            #expect(r.status == 0, "\(r.stderr)")
            return FileManager.default.contents(atPath: out)
        }
        let fromJSON = try train("corpus.jsonl", ["--text-field", "text"])
        let fromParquet = try train("corpus.parquet")
        #expect(fromJSON != nil && fromParquet == fromJSON)
        // A file that is not UTF-8 where Parquet says text is refused naming the place, not as a text line.
        let bad = try run([tool] + args + ["\(dir)/bad/not-utf8.parquet", "--out", "\(dir)/bad-out"])
        #expect(
            bad.status != 0 && bad.stderr.contains("row group 1, column 'text', page 2")
                && bad.stderr.contains("row 2: not valid UTF-8"), "\(bad.stderr)")
    }

    /// Training streams its inputs: the same model from 1 and 2 counting threads, from a gzip copy and from the
    /// lines as JSON Lines documents; a sample at least as large as the text is the whole text; a smaller one
    /// is reproducible.
    @Test func tokenizerTrainingIsTheSameForThreadsCompressionAndWholeSamples() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "3.14", "naïve", "café", "日本語"]
        var seed: UInt64 = 7
        func next() -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int(seed >> 33)
        }
        let text = (0..<4000).map { _ in
            (0..<(3 + next() % 9)).map { _ in words[next() % words.count] }.joined(separator: " ")
        }.joined(separator: "\n")
        try text.write(toFile: dir + "/c.txt", atomically: true, encoding: .utf8)
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/sh")
        gzip.arguments = ["-c", "gzip -c \(dir)/c.txt > \(dir)/c.txt.gz"]
        try gzip.run()
        gzip.waitUntilExit()
        func train(_ name: String, _ extra: [String], input: String = "c.txt") throws -> Data? {
            let r = try run(
                [
                    tool, "tokenizer", "train", "--input", "\(dir)/\(input)", "--vocab-size", "320", "--out",
                    "\(dir)/\(name).model",
                ] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            return FileManager.default.contents(atPath: "\(dir)/\(name).model")
        }
        // The same lines as JSON Lines documents (two lines each, under another field name).
        let lines = text.split(separator: "\n").map(String.init)
        let jsonl = try stride(from: 0, to: lines.count, by: 2).map { i in
            String(
                decoding: try JSONSerialization.data(withJSONObject: [
                    "body": lines[i..<min(i + 2, lines.count)].joined(separator: "\n")
                ]), as: UTF8.self)
        }.joined(separator: "\n")
        try jsonl.write(toFile: dir + "/c.jsonl", atomically: true, encoding: .utf8)
        let one = try #require(try train("one", []))
        #expect(try train("two", ["--threads", "2"]) == one)
        #expect(try train("jsonl", ["--text-field", "body"], input: "c.jsonl") == one)
        #expect(try train("gz", ["--threads", "2"], input: "c.txt.gz") == one)
        #expect(try train("all", ["--input-sentence-size", "4000"]) == one)
        let sample = try train("sample", ["--input-sentence-size", "500"])
        let again = try train("again", ["--input-sentence-size", "500", "--threads", "2"])
        #expect(sample != nil && sample != one && sample == again)
        let r = try run([
            tool, "tokenizer", "train", "--input", dir + "/c.txt", "--vocab-size", "320", "--input-sentence-size",
            "500", "--out", dir + "/x.model",
        ])
        #expect(r.stdout.contains("a sample of 500 of 4000 lines"), "\(r.stdout)")
        // Windows line ends train the model of Unix ones; a line that is not UTF-8 is refused where it is, or
        // skipped and counted, and the rest trains the same model.
        try text.replacingOccurrences(of: "\n", with: "\r\n").write(
            toFile: dir + "/crlf.txt", atomically: true, encoding: .utf8)
        #expect(try train("crlf", [], input: "crlf.txt") == one)
        try (Data(text.utf8) + Data("\nbad \u{00}".utf8) + Data([0xC3, 0x28, 0x0A])).write(
            to: URL(fileURLWithPath: dir + "/bad.txt"))
        let refused = try run([
            tool, "tokenizer", "train", "--input", dir + "/bad.txt", "--vocab-size", "320", "--out", dir + "/b.model",
        ])
        #expect(
            refused.status == 1 && refused.stderr.contains("bad.txt:4001: invalid UTF-8 at byte 6"), "\(refused.stderr)"
        )
        let skipping = try run([
            tool, "tokenizer", "train", "--input", dir + "/bad.txt", "--vocab-size", "320", "--out", dir + "/b.model",
            "--skip-bad-lines",
        ])
        #expect(skipping.stdout.contains("skipped 1 line(s)"), "\(skipping.stdout)")
        #expect(FileManager.default.contents(atPath: dir + "/b.model") == one)
    }

    /// On a CPU "without" bf16 (the environment says so): the default falls back to fp32 with one line that
    /// says why, and an explicit bf16 is refused naming what to do.
    @Test func precisionFallsBackToFP32WithoutBF16() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = try writeTinyConfig(dir, steps: 1)
        let without = ["LLAMA_TRAIN_CPU_BF16": "0"]
        let fallback = try run([tool, "pretrain", "--config", config], environment: without)
        #expect(
            fallback.status == 0
                && fallback.stdout.contains("precision: fp32, since this CPU has no AVX-512 BF16 or AMX"),
            "\(fallback.stdout)")
        let refused = try run([tool, "pretrain", "--config", config, "--precision", "bf16"], environment: without)
        #expect(
            refused.status == 1 && refused.stderr.contains("--precision fp32")
                && refused.stderr.contains("LLAMA_TRAIN_CPU_BF16=0"), "\(refused.stderr)")
        let forced = try run([tool, "pretrain", "--config", config, "--precision", "fp32"])
        #expect(forced.status == 0 && forced.stdout.contains("precision: fp32 matmuls (OpenBLAS), as configured"))
    }

    /// `plan --simulate` with ranks of several threads: compute and the optimizer speed up by threads ×
    /// efficiency, communication does not, so 7B's step at 1024 ranks falls by more than 20× at 64 threads.
    @Test func simulatorTakesThreadsPerRank() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: packageRoot + "/configs/bench-small.json")))
        let calibration: [String: Any] = [
            "config": config, "machine": ["cores": 2],
            "results": [
                [
                    "mode": "weak", "ranks": 1, "tokens_per_step": 1024, "compute_s": 1.0, "optimizer_s": 0.02,
                    "step_s": 1.02,
                ],
                [
                    "mode": "weak", "ranks": 2, "tokens_per_step": 2048, "compute_s": 1.0, "optimizer_s": 0.02,
                    "step_s": 1.06,
                    "bus_bytes_per_s_raw_mpi_25mb_messages": 5e9, "raw_small_seconds": 2e-5,
                    "per_rank_efficiency": 0.96,
                ],
            ],
        ]
        try JSONSerialization.data(withJSONObject: calibration).write(to: URL(fileURLWithPath: dir + "/scaling.json"))
        func step(_ threads: Int) throws -> Double {
            let r = try run([
                tool, "plan", "--simulate", "--calibration", dir + "/scaling.json", "--configs",
                packageRoot + "/configs/llama2-7b.json",
                "--max-ranks", "1024", "--threads-per-rank", "\(threads)",
            ])
            #expect(r.status == 0, "\(r.stderr)")
            let row = try #require(r.stdout.split(separator: "\n").first { $0.split(separator: " ").first == "1024" })
            return try #require(Double(row.split(separator: " ")[3]))
        }
        let one = try step(1), many = try step(64)
        #expect(one / many > 20 && one / many < 64, "\(one) s against \(many) s")
        let conflicting = try run([
            tool, "plan", "--simulate", "--node-tflops", "10", "--link-gbps", "100", "--latency-us", "5",
            "--threads-per-rank", "4",
        ])
        #expect(conflicting.status == 2 && conflicting.stderr.contains("--threads-per-rank"), "\(conflicting.stderr)")
    }

    @Test func benchEndsWithOneJSONObject() throws {
        let tool = try toolPath()
        let dir = try scratch()
        try """
        {"model": {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 256, "ffn_hidden_size": 128,
                   "max_seq_len": 32},
         "train": {"seq_len": 32, "micro_batch": 2}}
        """.write(toFile: dir + "/tiny.json", atomically: true, encoding: .utf8)
        let r = try run([tool, "bench", "--config", dir + "/tiny.json", "--steps", "2", "--warmup", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        let last = try #require(r.stdout.split(separator: "\n").last)
        let json = try JSONSerialization.jsonObject(with: Data(last.utf8)) as! [String: Any]
        for key in ["tokens_per_s", "model_gflops", "sgemm_gflops", "mfu_vs_sgemm", "peak_rss_mb"] {
            #expect((json[key] as? Double ?? 0) > 0, "\(key)")
        }
    }

    @Test func badConfigNamesFileAndField() throws {
        let tool = try toolPath()
        let dir = try scratch()
        try #"{"model": {"dim": 64, "n_layers": 2, "n_heads": 5}, "train": {}}"#.write(
            toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
        let r = try run([tool, "bench", "--config", dir + "/bad.json"])
        #expect(r.status == 1 && r.stderr.contains(dir + "/bad.json") && r.stderr.contains("n_heads"))
        try #"{"model": {"dim": 64, "n_layers": 2, "n_heads": 4, "heads": 3}}"#.write(
            toFile: dir + "/typo.json", atomically: true, encoding: .utf8)
        let typo = try run([tool, "bench", "--config", dir + "/typo.json"])
        #expect(typo.status == 1 && typo.stderr.contains("model.heads"))
        let usage = try run([tool, "bench", "--config", dir + "/bad.json", "--thread", "2"])
        #expect(usage.status == 2 && usage.stderr.contains("--thread"))
    }
}

/// Each source's tokens, its shards end to end in index order.
func tokenStreams(_ directory: String) throws -> [String: [Int]] {
    let index =
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/index.json")))
        as! [String: Any]
    var streams: [String: [Int]] = [:]
    for source in index["sources"] as! [[String: Any]] {
        var tokens: [Int] = []
        for shard in source["shards"] as! [[String: Any]] {
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + (shard["file"] as! String)))
            #expect(data[12] == 2)  // 16-bit tokens for the 2000-piece fixture
            tokens += data.dropFirst(64).withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)).map(Int.init) }
        }
        streams[source["name"] as! String] = tokens
    }
    return streams
}
