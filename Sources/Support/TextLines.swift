// The one line reader of every text input (fine-tuning data, metrics, standard input): LF or CRLF end a line
// alike (a lone CR is data, as sentencepiece and Python's splitlines-on-"\n" readers keep it), and the bytes
// must be UTF-8: an invalid line is reported as `source:line:byte`, never replaced with U+FFFD. Swift's own
// String splitting cannot do the first ("\r\n" is one Character, so a Windows file is one line) and its
// decoding silently does the replacement. What this is not: the streaming byte-range reader of `prepare`
// (Dataset/ByteStream.swift), which keeps its own offsets.
import Foundation

public struct TextLineError: Error, CustomStringConvertible, Equatable {
    public let source: String
    public let line: Int
    /// 1-based byte within the line.
    public let byte: Int

    public init(source: String, line: Int, byte: Int) { (self.source, self.line, self.byte) = (source, line, byte) }

    public var description: String {
        "\(source):\(line):\(byte): not valid UTF-8; convert the file (iconv -f LATIN1 -t UTF-8, say) or drop the line"
    }
}

public enum TextLines {
    /// One line: its 1-based number and its text, or where its bytes stop being UTF-8.
    public struct Line {
        public let number: Int
        public let text: Result<String, TextLineError>
    }

    /// The lines of `bytes`, the last one even without a final newline (and none after a final newline).
    public static func lines(_ bytes: [UInt8], source: String) -> [Line] {
        var out: [Line] = []
        var start = 0, number = 0
        while start < bytes.count {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            number += 1
            out.append(Line(number: number, text: decode(bytes[start..<end], source: source, line: number)))
            start = end + 1
        }
        return out
    }

    /// Calls `body` with each line of the file descriptor (standard input: 0), in bounded memory (one line and
    /// a 64 KiB buffer); throws TextLineError at the first line that is not UTF-8.
    public static func forEach(descriptor: Int32, source: String, _ body: (Int, String) throws -> Void) throws {
        var pending: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 1 << 16), number = 0
        func emit(_ bytes: ArraySlice<UInt8>) throws {
            number += 1
            try body(number, try decode(bytes, source: source, line: number).get())
        }
        while true {
            let n = read(descriptor, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            pending += chunk[0..<n]
            var start = 0
            while let end = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                try emit(pending[start..<end])
                start = end + 1
            }
            pending.removeFirst(start)
        }
        if !pending.isEmpty { try emit(pending[...]) }
    }

    /// A line's bytes without a CR just before its LF, as text, or the first byte that is not UTF-8.
    static func decode(_ bytes: ArraySlice<UInt8>, source: String, line: Int) -> Result<String, TextLineError> {
        let content = bytes.last == UInt8(ascii: "\r") ? bytes.dropLast() : bytes
        if let bad = firstInvalidByte(content) {
            return .failure(TextLineError(source: source, line: line, byte: bad + 1))
        }
        return .success(String(decoding: content, as: UTF8.self))
    }

    /// The offset of the first byte that does not belong to a valid UTF-8 sequence, or nil.
    public static func firstInvalidByte(_ bytes: some Sequence<UInt8>) -> Int? {
        // Valid text, nearly every line, goes through the standard library's fast validator; only a bad line
        // is walked scalar by scalar to find where.
        let valid = bytes.withContiguousStorageIfAvailable { String(validating: $0, as: UTF8.self) != nil }
        if valid == true { return nil }
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case let .valid(scalar): offset += scalar.count
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }
}
