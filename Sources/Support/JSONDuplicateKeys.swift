// Duplicate keys in a JSON document, which JSONSerialization and JSONDecoder accept silently (one of the two
// values wins): a config with "lr" twice must be refused, naming the key and both lines. A small scanner
// over the bytes that knows only what it needs (objects, arrays, strings and their escapes); the document is
// parsed for real elsewhere. What this is not: a validator (malformed JSON is the parser's to report).

public enum JSONDuplicateKeys {
    public struct Duplicate: Equatable, Sendable {
        /// The key with the keys of the objects around it: "train.lr".
        public let path: String
        public let firstLine: Int
        public let secondLine: Int

        public init(path: String, firstLine: Int, secondLine: Int) {
            (self.path, self.firstLine, self.secondLine) = (path, firstLine, secondLine)
        }
    }

    /// The first key that appears twice in one object, or nil.
    public static func first(in bytes: [UInt8]) -> Duplicate? {
        // One frame per open object or array: the keys seen (with their lines) and the key it sits under.
        struct Frame {
            var isObject: Bool
            var keys: [String: Int] = [:]
            var name: String
        }
        var stack: [Frame] = []
        var line = 1, i = 0
        var lastString: (text: String, line: Int)?
        // The key the next value sits under, so that an object or array opened there is named by it.
        var pendingName: String?
        func path(_ key: String) -> String {
            (stack.dropFirst().map(\.name).filter { !$0.isEmpty } + [key]).joined(separator: ".")
        }
        while i < bytes.count {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "\n"): line += 1
            case UInt8(ascii: "\""):
                var text: [UInt8] = []
                let start = line
                i += 1
                while i < bytes.count && bytes[i] != UInt8(ascii: "\"") {
                    if bytes[i] == UInt8(ascii: "\\"), i + 1 < bytes.count {
                        text.append(bytes[i])
                        i += 1
                    }
                    if bytes[i] == UInt8(ascii: "\n") { line += 1 }
                    text.append(bytes[i])
                    i += 1
                }
                lastString = (String(decoding: text, as: UTF8.self), start)
            case UInt8(ascii: ":"):
                if let key = lastString, let top = stack.indices.last, stack[top].isObject {
                    if let earlier = stack[top].keys[key.text] {
                        return Duplicate(path: path(key.text), firstLine: earlier, secondLine: key.line)
                    }
                    stack[top].keys[key.text] = key.line
                    pendingName = key.text
                }
                lastString = nil
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                stack.append(Frame(isObject: c == UInt8(ascii: "{"), name: pendingName ?? ""))
                pendingName = nil
                lastString = nil
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = stack.popLast()
                pendingName = nil
                lastString = nil
            case UInt8(ascii: ","):
                pendingName = nil
                lastString = nil
            default: break
            }
            i += 1
        }
        return nil
    }
}
