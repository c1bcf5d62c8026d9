// A small command-line parser: `--flag value`, `--flag=value`, bare `--switch`, and list flags that take
// every value up to the next flag (`--input a.txt b.txt`), with errors that name the flag. (The project
// takes no package dependencies, so no swift-argument-parser.)

struct UsageError: Error, CustomStringConvertible {
    let description: String
}

struct Arguments {
    private var values: [String: [String]] = [:]
    private var switches: Set<String> = []
    private(set) var positional: [String] = []
    private var used: Set<String> = []

    init(_ arguments: ArraySlice<String>, switches known: Set<String> = [], lists: Set<String> = []) throws {
        var i = arguments.startIndex
        while i < arguments.endIndex {
            let arg = arguments[i]
            i += 1
            guard arg.hasPrefix("--") else {
                positional.append(arg)
                continue
            }
            let body = String(arg.dropFirst(2))
            if let eq = body.firstIndex(of: "=") {
                values[String(body[..<eq]), default: []].append(String(body[body.index(after: eq)...]))
            } else if known.contains(body) {
                switches.insert(body)
            } else if lists.contains(body) {
                while i < arguments.endIndex && !arguments[i].hasPrefix("--") {
                    values[body, default: []].append(arguments[i])
                    i += 1
                }
            } else {
                guard i < arguments.endIndex else { throw UsageError(description: "--\(body) needs a value") }
                values[body, default: []].append(arguments[i])
                i += 1
            }
        }
    }

    mutating func string(_ name: String) -> String? {
        used.insert(name)
        return values[name]?.last
    }

    /// Every value a list flag was given.
    mutating func list(_ name: String) -> [String] {
        used.insert(name)
        return values[name] ?? []
    }

    mutating func require(_ name: String) throws -> String {
        guard let v = string(name) else { throw UsageError(description: "--\(name) is required") }
        return v
    }

    mutating func int(_ name: String, default value: Int) throws -> Int {
        guard let text = string(name) else { return value }
        guard let v = Int(text) else { throw UsageError(description: "--\(name) expects an integer, got '\(text)'") }
        return v
    }

    mutating func flag(_ name: String) -> Bool {
        used.insert(name)
        return switches.contains(name)
    }

    /// Refuses flags that no command read: a misspelt flag must not be ignored.
    func checkAllUsed() throws {
        if let unknown = (Set(values.keys).union(switches)).subtracting(used).sorted().first {
            throw UsageError(description: "unknown flag --\(unknown)")
        }
        if let stray = positional.first { throw UsageError(description: "unexpected argument '\(stray)'") }
    }
}
