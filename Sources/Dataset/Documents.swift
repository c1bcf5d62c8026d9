// Reading training documents: plain text (one document per file, or documents split on a delimiter line
// such as the "%" of fortune files) and JSON Lines with a "text" field. Every error names the file (and
// line); an input with no document is refused rather than silently contributing nothing.
import Foundation
import Support

public struct InputSpec: Equatable, Sendable {
    /// The source this input belongs to; mixture weights are given per source.
    public var source: String
    public var path: String

    /// "NAME=PATH" or "PATH" (the source is then the file name without extension).
    public init(argument: String) {
        if let eq = argument.firstIndex(of: "="), !argument[..<eq].contains("/") {
            source = String(argument[..<eq])
            path = String(argument[argument.index(after: eq)...])
        } else {
            path = argument
            source = ((argument as NSString).lastPathComponent as NSString).deletingPathExtension
        }
    }
}

public enum Documents {
    /// The documents of one input, in file order.
    public static func read(_ path: String, delimiter: String?) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DatasetError.unreadable(file: path, reason: FileManager.default.fileExists(atPath: path) ? "permission denied or not a file" : "no such file")
        }
        let text = String(decoding: data, as: UTF8.self)
        var documents: [String] = []
        if path.hasSuffix(".jsonl") || path.hasSuffix(".jsonl.txt") {
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
                guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                      let value = object["text"] as? String
                else {
                    throw DatasetError.invalid("\(path):\(n + 1): not a JSON object with a string field 'text'")
                }
                if !value.isEmpty { documents.append(value) }
            }
        } else if let delimiter {
            var current: [Substring] = []
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                if line == delimiter {
                    let document = current.joined(separator: "\n")
                    if !document.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { documents.append(document) }
                    current.removeAll()
                } else {
                    current.append(line)
                }
            }
            let last = current.joined(separator: "\n")
            if !last.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { documents.append(last) }
        } else if !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            documents.append(text)
        }
        if documents.isEmpty { throw DatasetError.emptyInput(file: path) }
        return documents
    }
}

public enum ShardWriter {
    /// Writes each source's tokens as shards of at most `shardTokens` tokens, then index.json (last, so a
    /// directory with an index is complete). Documents are kept whole within a shard where they fit.
    public static func write(sources: [(name: String, inputs: [String], documents: [[Int32]])], vocabSize: Int,
                             tokenizerHash: String, shardTokens: Int, to directory: String) throws -> DatasetIndex {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var index = DatasetIndex(tokenizerSHA256: tokenizerHash, vocabSize: vocabSize, sources: [])
        for source in sources {
            var shards: [DatasetIndex.Shard] = []
            var tokens: [Int32] = []
            var documents = 0
            func flush() throws {
                guard !tokens.isEmpty else { return }
                let file = String(format: "%@-%05d.bin", source.name, shards.count)
                try TokenShard.write(tokens: tokens, documents: documents, vocabSize: vocabSize,
                                     tokenizerHash: tokenizerHash, to: directory + "/" + file)
                shards.append(.init(file: file, tokens: tokens.count, documents: documents, maxTokenId: Int(tokens.max() ?? -1)))
                tokens.removeAll(keepingCapacity: true)
                documents = 0
            }
            for document in source.documents {
                if !tokens.isEmpty && tokens.count + document.count > shardTokens { try flush() }
                tokens += document
                documents += 1
            }
            try flush()
            index.sources.append(.init(name: source.name, inputs: source.inputs, shards: shards))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(index), to: directory + "/index.json")
        return index
    }
}
