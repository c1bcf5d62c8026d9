// Outputs that would destroy inputs are refused before any work, naming both flags, and the input is left as
// it was: the same file, a file the output directory would replace, and the same through a symlink.
import Foundation
import TestSupport
import Testing

@Suite(.serialized) struct OutputClashTests {
    func expectRefusedKeeping(_ r: Run, _ flags: [String], _ file: String, _ before: Data?, _ what: String) {
        #expect(r.status == 1 && flags.allSatisfy { r.stderr.contains($0) }, "\(what): \(r.stderr)")
        #expect(before != nil && FileManager.default.contents(atPath: file) == before, "\(what): \(file) changed")
    }

    @Test func outputsNeverOverwriteInputs() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = try writeTinyConfig(dir)
        let kept = FileManager.default.contents(atPath: config)
        // --out is the config's directory: its config.json would replace... the run's own config, named so.
        try FileManager.default.copyItem(atPath: config, toPath: dir + "/config.json")
        let asExport = dir + "/config.json", exportBytes = FileManager.default.contents(atPath: asExport)
        let out = try run([tool, "pretrain", "--config", asExport, "--out", dir])
        expectRefusedKeeping(out, ["--out", "--config"], asExport, exportBytes, "--out beside --config")
        // The same through a symlink to the directory.
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir)
        let linked = try run([tool, "pretrain", "--config", asExport, "--out", dir + "/link"])
        expectRefusedKeeping(linked, ["--out", "--config"], asExport, exportBytes, "--out through a symlink")
        // --metrics naming an input (the config itself, through `..` and through a symlink).
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        let metrics = try run([tool, "pretrain", "--config", config, "--metrics", dir + "/sub/../tiny.json"])
        expectRefusedKeeping(metrics, ["--metrics", "--config"], config, kept, "--metrics on the config")
        let viaLink = try run([tool, "pretrain", "--config", config, "--metrics", dir + "/link/tiny.json"])
        expectRefusedKeeping(viaLink, ["--metrics", "--config"], config, kept, "--metrics through a symlink")
        // tokenizer train --out naming its own input; plot --out naming its metrics.
        let corpus = dir + "/corpus.txt"
        try String(repeating: "the cat sat on the mat\n", count: 50).write(
            toFile: corpus, atomically: true, encoding: .utf8)
        let text = FileManager.default.contents(atPath: corpus)
        let train = try run([tool, "tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--out", corpus])
        expectRefusedKeeping(train, ["--out", "--input"], corpus, text, "tokenizer train")
        let plot = try run([tool, "plot", "--metrics", corpus, "--out", corpus])
        expectRefusedKeeping(plot, ["--out", "--metrics"], corpus, text, "plot")
        // Apart, the same run goes through.
        #expect(try run([tool, "pretrain", "--config", config, "--out", dir + "/model"]).status == 0)
    }

    /// prepare, export and reward score, the other commands that write files.
    @Test func theOtherWritersSpareTheirInputs() throws {
        let tool = try toolPath()
        let dir = try scratch()
        // prepare --out holding an input named like what it writes: a .bin shard, index.json (via a symlink).
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        let shardLike = dir + "/data/web-00000.bin"
        try "a few words of text\n".write(toFile: shardLike, atomically: true, encoding: .utf8)
        let shardBytes = FileManager.default.contents(atPath: shardLike)
        let prepare = try run([
            tool, "prepare", "--tokenizer", fixtureTokenizer, "--input", "web=" + shardLike, "--out", dir + "/data",
        ])
        expectRefusedKeeping(prepare, ["--out", "--input"], shardLike, shardBytes, "prepare onto a .bin input")
        try FileManager.default.createSymbolicLink(atPath: dir + "/data-link", withDestinationPath: dir + "/data")
        let index = dir + "/data/index.json"
        try "{\"text\": \"words\"}\n".write(toFile: index, atomically: true, encoding: .utf8)
        let indexBytes = FileManager.default.contents(atPath: index)
        let viaLink = try run([
            tool, "prepare", "--tokenizer", fixtureTokenizer, "--input", index, "--out", dir + "/data-link",
        ])
        expectRefusedKeeping(viaLink, ["--out", "--input"], index, indexBytes, "prepare through a symlink")
        // A text input in --out that prepare does not write is not a clash.
        let text = dir + "/data/corpus.txt"
        try String(repeating: "the cat sat on the mat\n", count: 20).write(
            toFile: text, atomically: true, encoding: .utf8)
        let beside = try run([
            tool, "prepare", "--tokenizer", fixtureTokenizer, "--input", text, "--out", dir + "/data",
        ])
        #expect(beside.status == 0, "prepare beside its input: \(beside.stderr)")

        // export --out into the step directory it reads.
        let config = try writeTinyConfig(dir, steps: 1)
        let trained = try run([tool, "pretrain", "--config", config, "--checkpoint-dir", dir + "/ck"])
        #expect(trained.status == 0, "\(trained.stderr)")
        let step = dir + "/ck/step-00000001", manifest = step + "/manifest.json"
        let manifestBytes = FileManager.default.contents(atPath: manifest)
        let export = try run([tool, "export", "--checkpoint", step, "--out", step])
        expectRefusedKeeping(export, ["--out", "--checkpoint"], manifest, manifestBytes, "export into its checkpoint")
        let exported = try run([tool, "export", "--checkpoint", step, "--out", dir + "/hf"])
        #expect(exported.status == 0, "\(exported.stderr)")

        // reward score --svg naming a file of the model it reads.
        let hfConfig = dir + "/hf/config.json", hfBytes = FileManager.default.contents(atPath: hfConfig)
        let score = try run([tool, "reward", "score", "--checkpoint", dir + "/hf", "--svg", hfConfig])
        expectRefusedKeeping(score, ["--svg", "--checkpoint"], hfConfig, hfBytes, "reward score --svg")
    }
}
