// JSON Lines reading shared by every command that takes it (fine-tuning data, metrics files, standard
// input): each non-blank line with its 1-based number, parsed as an object or nil, so callers can name
// `file:line` in their messages. Not a streaming reader: callers here read files that fit in memory.
import Foundation

public enum JSONLines {
    public struct Line {
        public let number: Int
        /// The line's JSON object, or nil when it is not valid JSON or not an object.
        public let object: [String: Any]?
    }

    /// The non-blank lines of `data`.
    public static func lines(_ data: Data) -> [Line] {
        var out: [Line] = []
        for (n, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .enumerated()
        {
            if line.allSatisfy({ $0.isWhitespace }) { continue }
            out.append(Line(number: n + 1, object: object(String(line))))
        }
        return out
    }

    /// One line parsed as a JSON object, or nil.
    public static func object(_ line: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }
}
