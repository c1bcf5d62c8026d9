// `llama-train tokenizer train`, `tokenize` and `detokenize`: the tokenizer from the command line.
import Checkpoint
import Configuration
import FineTune
import Foundation
import Model
import Support
import Tokenizer
import Tools
import Training

enum TokenizerCommands {
    static func train(_ args: inout Arguments) throws {
        let inputs = args.list("input")
        let out = try args.require("out")
        var options = BPETrainerOptions()
        options.vocabSize = try args.int("vocab-size", default: options.vocabSize)
        if let coverage = args.string("character-coverage") {
            guard let c = Float(coverage), c > 0, c <= 1 else {
                throw UsageError(description: "--character-coverage expects a number in (0, 1], got '\(coverage)'")
            }
            options.characterCoverage = c
        }
        options.userDefinedSymbols = args.list("user-defined-symbols").flatMap { $0.split(separator: ",").map(String.init) }
        options.maxSentencepieceLength = try args.int("max-piece-length", default: options.maxSentencepieceLength)
        try args.checkAllUsed()
        guard !inputs.isEmpty else { throw UsageError(description: "--input FILE is required (repeat it for several files)") }
        var lines: [Substring] = []
        for path in inputs {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw FileError(path: path, message: "cannot read the training text")
            }
            let text = String(decoding: data, as: UTF8.self)
            lines.append(contentsOf: text.split(separator: "\n", omittingEmptySubsequences: true))
        }
        let start = Date()
        let model = try BPETrainer.train(lines: lines, options: options)
        _ = try Tokenizer(model: model, source: out)  // what we write must load
        try AtomicFile.write(Data(model.serialized()), to: out)
        let seconds = Date().timeIntervalSince(start)
        print(String(format: "trained %d pieces from %d lines in %.2f s: %@", model.pieces.count, lines.count, seconds, out))
    }

    static func tokenize(_ args: inout Arguments) throws {
        let tokenizer = try Tokenizer(path: try args.require("tokenizer"))
        let bos = args.flag("bos"), eos = args.flag("eos")
        try args.checkAllUsed()
        try forEachJSONLine { object, line in
            guard let text = object["text"] as? String else {
                throw UsageError(description: "standard input line \(line): no string field 'text'")
            }
            let ids = tokenizer.encode(text, bos: bos, eos: eos)
            return ["ids": ids.map(Int.init), "pieces": tokenizer.pieces(ids)]
        }
    }

    static func detokenize(_ args: inout Arguments) throws {
        let tokenizer = try Tokenizer(path: try args.require("tokenizer"))
        try args.checkAllUsed()
        try forEachJSONLine { object, line in
            guard let ids = object["ids"] as? [NSNumber] else {
                throw UsageError(description: "standard input line \(line): no integer array field 'ids'")
            }
            return ["text": try tokenizer.decode(ids.map { Int32(truncatingIfNeeded: $0.intValue) })]
        }
    }

    /// Reads JSON Lines on standard input and writes one JSON object per input line.
    private static func forEachJSONLine(_ body: ([String: Any], Int) throws -> [String: Any]) throws {
        var lineNumber = 0
        while let line = readLine(strippingNewline: true) {
            lineNumber += 1
            if line.isEmpty { continue }
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                throw UsageError(description: "standard input line \(lineNumber): not a JSON object")
            }
            let result = try body(object, lineNumber)
            let data = try JSONSerialization.data(withJSONObject: result, options: [.withoutEscapingSlashes])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
    }
}

extension TokenizerCommands {
    /// `tokenizer bench --tokenizer FILE --input FILE... [--repeat N]`: single-thread encoding speed on the
    /// lines of the inputs (line-sized inputs, as data preparation sees them); last line JSON.
    static func bench(_ args: inout Arguments) throws {
        let tokenizer = try Tokenizer(path: try args.require("tokenizer"))
        let inputs = args.list("input")
        let repeats = try args.int("repeat", default: 3)
        try args.checkAllUsed()
        var lines: [String] = []
        for path in inputs {
            guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path: path, message: "cannot read") }
            lines += String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        }
        let bytes = lines.reduce(0) { $0 + $1.utf8.count }
        var rates: [Double] = []
        var tokens = 0
        for _ in 0..<max(repeats, 1) {
            let start = Date()
            tokens = 0
            for line in lines { tokens += tokenizer.encode(line).count }
            rates.append(Double(bytes) / Date().timeIntervalSince(start) / 1e6)
        }
        let median = rates.sorted()[rates.count / 2]
        print(String(format: "encoded %d lines, %.2f MB into %d tokens: %.2f MB/s (median of %d)", lines.count,
                     Double(bytes) / 1e6, tokens, median, rates.count))
        print("{\"encode_mb_per_s\": \(median), \"lines\": \(lines.count), \"bytes\": \(bytes), \"tokens\": \(tokens)}")
    }
}
