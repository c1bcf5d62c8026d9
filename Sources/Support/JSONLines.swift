// JSON Lines reading shared by every command that takes it (fine-tuning data, metrics files, standard
// input): each non-blank line with its 1-based number, parsed as an object or nil with the reason, so callers
// can name `file:line` in their messages. Lines come from TextLines (LF or CRLF, strict UTF-8). Not a
// streaming reader: callers here read files that fit in memory.
import Foundation

public enum JSONLines {
    public struct Line {
        public let number: Int
        /// The line's JSON object, or nil when it is not valid UTF-8, not valid JSON or not an object.
        public let object: [String: Any]?
        /// Why `object` is nil.
        public var problem: String? {
            guard object == nil else { return nil }
            return invalidUTF8.map { "not valid UTF-8 at byte \($0.byte)" } ?? "not a JSON object"
        }
        let invalidUTF8: TextLineError?
    }

    /// The non-blank lines of `data`; `source` names it in a line's UTF-8 error.
    public static func lines(_ data: Data, source: String = "-") -> [Line] {
        TextLines.lines([UInt8](data), source: source).compactMap { line in
            switch line.text {
            case let .success(text):
                if text.allSatisfy({ $0.isWhitespace }) { return nil }
                return Line(number: line.number, object: object(text), invalidUTF8: nil)
            case let .failure(error):
                return Line(number: line.number, object: nil, invalidUTF8: error)
            }
        }
    }

    /// One line parsed as a JSON object, or nil.
    public static func object(_ line: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }
}
