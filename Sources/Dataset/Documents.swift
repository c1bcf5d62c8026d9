// Reading training documents as a stream: JSON Lines with a text field (one document per line), Parquet with a
// text column (one document per row; nulls and empty strings are no document), plain text split on a
// delimiter line (the "%" of fortune files), or plain text that is one document per file. Text inputs may be
// gzip or zstd compressed. Nothing holds a whole file: lines come through a bounded buffer, and a
// long plain-text document comes out in parts cut before a "\n".
//
// An uncompressed JSON Lines or delimited file can be read as one of R byte ranges: range r owns the
// documents that start in [x_r, x_{r+1}), x_r = r·size/R, so the ranges partition the documents for any R
// and each is found by reading near its two ends only. A Parquet file is cut the same way at row groups
// (ParquetFile.rowGroups), weighed by the bytes of its text column.
//
// Every error names the file and line. A bad line (invalid UTF-8, not JSON, no text field) is refused, or,
// with `skipBadLines`, counted, named in `warnings` and skipped; a damaged compressed stream is refused.
import Foundation
import Support

public struct InputSpec: Equatable, Sendable {
    /// The source this input belongs to; mixture weights are given per source.
    public var source: String
    public var path: String

    /// "NAME=PATH" or "PATH" (the source is then the file name without its extensions).
    public init(argument: String) {
        if let eq = argument.firstIndex(of: "="), !argument[..<eq].contains("/") {
            source = String(argument[..<eq])
            path = String(argument[argument.index(after: eq)...])
        } else {
            path = argument
            var name = (argument as NSString).lastPathComponent as NSString
            if InputFormat.compressionSuffixes.contains(where: { argument.hasSuffix($0) }) {
                name = name.deletingPathExtension as NSString
            }
            source = name.deletingPathExtension
        }
    }
}

public enum InputFormat: Equatable, Sendable {
    case jsonLines(field: String)
    case parquet(column: String)
    case delimited(String)
    case wholeFile

    static let compressionSuffixes = [".gz", ".zst", ".zstd"]

    /// Parquet by name or by its magic bytes, JSON Lines by name (.jsonl, .ndjson, .jsonl.txt, each optionally
    /// .gz/.zst), else plain text.
    public static func of(path: String, textField: String = "text", delimiter: String?) -> InputFormat {
        if path.hasSuffix(".parquet") || ParquetFile.hasMagic(path) { return .parquet(column: textField) }
        var name = path
        if let suffix = compressionSuffixes.first(where: { path.hasSuffix($0) }) {
            name = String(path.dropLast(suffix.count))
        }
        if name.hasSuffix(".jsonl") || name.hasSuffix(".ndjson") || name.hasSuffix(".jsonl.txt") {
            return .jsonLines(field: textField)
        }
        return delimiter.map { .delimited($0) } ?? .wholeFile
    }
}

public struct DocumentOptions: Sendable {
    public var textField = "text"
    public var delimiter: String?
    public var skipBadLines = false
    /// Plain-text documents longer than this come out in parts (each cut before a "\n").
    public var partBytes = 1 << 20

    public init(textField: String = "text", delimiter: String? = nil, skipBadLines: Bool = false) {
        self.textField = textField
        self.delimiter = delimiter
        self.skipBadLines = skipBadLines
    }
}

/// A document, or one part of a long one.
public struct DocumentPart: Equatable, Sendable {
    public var text: String
    public var first: Bool
    public var last: Bool
}

public final class DocumentReader {
    public let path: String
    public let format: InputFormat
    public let compression: Compression
    let options: DocumentOptions
    private var lines: LineReader?
    private var rows: ParquetRows?
    /// Stop at the first document that starts at or after this offset (the next range's).
    private let stopOffset: Int
    private var pending: [UInt8] = []
    private var pendingLines = 0
    /// Where this reader's range starts, and the lines of the file before it (counted when first needed).
    private var rangeStart = 0
    private var lineOffset: Int?
    /// Parts of the current document already returned.
    private var partsOut = 0
    private var finished = false
    public private(set) var documents = 0
    public private(set) var badLines = 0
    /// The first few bad lines, named, when they are skipped.
    public private(set) var warnings: [String] = []

    /// Whether this input can be read as byte ranges or row groups (Parquet; uncompressed text with more than
    /// one document per file).
    public static func splittable(path: String, options: DocumentOptions) throws -> Bool {
        if case .parquet = InputFormat.of(path: path, textField: options.textField, delimiter: nil) { return true }
        return try Compression.of(path) == .none
            && InputFormat.of(path: path, textField: options.textField, delimiter: options.delimiter) != .wholeFile
    }

    /// Reads the whole input, or range `part` of `parts` (splittable inputs only).
    public init(path: String, options: DocumentOptions, part: Int = 0, of parts: Int = 1) throws {
        self.path = path
        self.options = options
        format = InputFormat.of(path: path, textField: options.textField, delimiter: options.delimiter)
        compression = try Compression.of(path)
        if case let .parquet(column) = format {
            let file = try ParquetFile(path: path)
            guard case let .value(leaf) = try file.field(column), leaf.element.type == .byteArray else {
                throw DatasetError.invalid(
                    "\(path): column '\(column)' is not a string column; choose the text column with --text-field")
            }
            let groups =
                parts > 1 ? file.rowGroups(part: part, of: parts, weightedBy: [column]) : 0..<file.rowGroupCount
            rows = try ParquetRows(file: file, fields: [column], groups: groups)
            stopOffset = .max
            return
        }
        guard parts > 1 else {
            lines = LineReader(try openByteStream(path))
            stopOffset = .max
            return
        }
        precondition(
            compression == .none && format != .wholeFile && part >= 0 && part < parts, "\(path) cannot be split")
        let size = try Self.fileSize(path)
        func nominal(_ r: Int) -> Int {
            r == parts ? size : Int((Double(r) / Double(parts) * Double(size)).rounded(.down))
        }
        let start = try Self.firstDocument(atOrAfter: nominal(part), in: path, format: format)
        stopOffset = part + 1 == parts ? .max : nominal(part + 1)
        guard start < size, start < stopOffset else {
            finished = true
            return
        }
        lines = LineReader(try FileStream(path: path, start: start), offset: start)
        rangeStart = start
    }

    /// The next document or part; nil at the end of the input (or range).
    public func next() throws -> DocumentPart? {
        if let rows, case let .parquet(column) = format {
            while let row = try rows.next() {
                if let problem = row.problem {
                    try bad(problem)
                    continue
                }
                guard let text = row.object[column] as? String, !text.isEmpty else { continue }
                documents += 1
                return DocumentPart(text: text, first: true, last: true)
            }
            return nil
        }
        while !finished {
            guard let lines else { break }
            if case let .jsonLines(field) = format {
                var stop = false
                let line: DocumentPart?? = try lines.next { bytes, offset in
                    if offset >= stopOffset {
                        stop = true
                        return nil
                    }
                    return try jsonDocument(bytes, field: field, line: lines.lineNumber)
                }
                guard let line, !stop else {
                    finished = true
                    continue
                }
                if let document = line {
                    documents += 1
                    return document
                }
                continue
            }
            // Plain text: lines accumulate into a document until a delimiter line or the end.
            var delimiterAt: Int? = nil
            let more: Bool? = try lines.next { bytes, offset in
                if case let .delimited(delimiter) = format, bytes.elementsEqual(delimiter.utf8) {
                    delimiterAt = lines.nextLineOffset
                    return true
                }
                guard try validUTF8(bytes, line: lines.lineNumber) else { return true }
                if pendingLines > 0 { pending.append(0x0A) }
                pending.append(contentsOf: bytes)
                pendingLines += 1
                return true
            }
            if more == nil {
                finished = true
                if let last = finishDocument() { return last }
            } else if let next = delimiterAt {
                let done = finishDocument()
                if next >= stopOffset { finished = true }
                if let done { return done }
            } else if pending.count >= options.partBytes, hasText(pending) {
                // A part ends before the "\n" that the next line brings.
                let part = DocumentPart(
                    text: String(decoding: pending, as: UTF8.self), first: partsOut == 0, last: false)
                partsOut += 1
                pending.removeAll(keepingCapacity: true)
                pendingLines = 1  // the next line is preceded by its "\n"
                return part
            }
        }
        return nil
    }

    private func finishDocument() -> DocumentPart? {
        defer {
            pending.removeAll(keepingCapacity: true)
            pendingLines = 0
            partsOut = 0
        }
        if partsOut == 0 && !hasText(pending) { return nil }
        documents += 1
        return DocumentPart(text: String(decoding: pending, as: UTF8.self), first: partsOut == 0, last: true)
    }

    private func hasText(_ bytes: [UInt8]) -> Bool {
        !String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }

    private func jsonDocument(_ bytes: UnsafeBufferPointer<UInt8>, field: String, line: Int) throws -> DocumentPart? {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return nil }
        let object = try? JSONSerialization.jsonObject(with: Data(buffer: bytes))
        guard let object = object as? [String: Any] else {
            try bad(line, TextLines.firstInvalidByte(bytes).map(Self.invalidUTF8) ?? "not a JSON object")
            return nil
        }
        guard let value = object[field] as? String else {
            try bad(
                line,
                object[field] == nil
                    ? "no field '\(field)' (choose another with --text-field)" : "field '\(field)' is not a string")
            return nil
        }
        return value.isEmpty ? nil : DocumentPart(text: value, first: true, last: true)
    }

    private func validUTF8(_ bytes: UnsafeBufferPointer<UInt8>, line: Int) throws -> Bool {
        guard let offset = TextLines.firstInvalidByte(bytes) else { return true }
        try bad(line, Self.invalidUTF8(at: offset))
        return false
    }

    private static func invalidUTF8(at offset: Int) -> String { "invalid UTF-8 at byte \(offset + 1)" }

    private func bad(_ line: Int, _ reason: String) throws {
        // Lines count from the range's start; the lines before it are counted only now, when one is named (a
        // rank reading the last of R ranges would otherwise read most of the file just to number its lines).
        if lineOffset == nil { lineOffset = rangeStart > 0 ? try Self.lineNumber(at: rangeStart, in: path) - 1 : 0 }
        try bad("\(path):\(line + lineOffset!): \(reason)")
    }

    /// A bad line or row, named in `message`: refused, or counted and skipped.
    private func bad(_ message: String) throws {
        guard options.skipBadLines else {
            let what = rows == nil ? "line" : "row"
            throw DatasetError.invalid(message + "; fix the \(what), or pass --skip-bad-lines to skip such \(what)s")
        }
        badLines += 1
        if warnings.count < 5 { warnings.append(message + " (skipped)") }
    }

    // MARK: - Byte ranges

    static func fileSize(_ path: String) throws -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else { throw DatasetError.unreadable(file: path, reason: errnoText()) }
        return Int(info.st_size)
    }

    /// The first document start at or after `offset`: a line start (JSON Lines), or the start of the line
    /// after a delimiter line (delimited text). Offset 0 is always a document start.
    static func firstDocument(atOrAfter offset: Int, in path: String, format: InputFormat) throws -> Int {
        guard offset > 0 else { return 0 }
        let size = try fileSize(path)
        var delimiter: [UInt8] = []
        if case let .delimited(d) = format { delimiter = Array(d.utf8) }
        // A delimiter line ending at or after `offset` starts at or after this (its end may be CRLF).
        let from = max(0, offset - (delimiter.isEmpty ? 0 : delimiter.count + 2))
        let reader = LineReader(try FileStream(path: path, start: max(0, from - 1)), offset: max(0, from - 1))
        if from > 0 { _ = try reader.next { _, _ in () } }  // the rest of the line holding byte from − 1
        while true {
            let found: Int?? = try reader.next { bytes, start in
                if delimiter.isEmpty { return start >= offset ? start : nil }
                let next = reader.nextLineOffset
                return bytes.elementsEqual(delimiter) && next >= offset ? next : nil
            }
            switch found {
            case .none: return size
            case let .some(.some(start)): return min(start, size)
            case .some(.none): continue
            }
        }
    }

    /// 1 + the newlines before `offset`: a range's first line number, so errors name real lines.
    static func lineNumber(at offset: Int, in path: String) throws -> Int {
        let stream = try FileStream(path: path, start: 0, end: offset)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var count = 1
        while true {
            let n = try buffer.withUnsafeMutableBytes { try stream.read(into: $0) }
            if n == 0 { return count }
            buffer.withUnsafeBufferPointer { b in
                var p = b.baseAddress!
                let end = b.baseAddress! + n
                while p < end, let hit = memchr(p, 0x0A, end - p) {
                    count += 1
                    p = UnsafePointer(hit.assumingMemoryBound(to: UInt8.self)) + 1
                }
            }
        }
    }
}

public enum Documents {
    /// The documents of one whole input, in file order (small inputs and tests; `prepare` streams).
    public static func read(_ path: String, delimiter: String?, textField: String = "text") throws -> [String] {
        let reader = try DocumentReader(
            path: path, options: DocumentOptions(textField: textField, delimiter: delimiter))
        var documents: [String] = []
        var current = ""
        while let part = try reader.next() {
            current += part.text
            if part.last {
                documents.append(current)
                current = ""
            }
        }
        if documents.isEmpty { throw DatasetError.emptyInput(file: path) }
        return documents
    }
}
