// Rows of a Parquet file as the JSON objects a JSON Lines file of the same data would hold, so that the
// fine-tuning stages read both through one parser: strings, numbers and booleans as JSONSerialization gives
// them, lists of structs as arrays of objects, null fields left out. Only the fields asked for are read, each
// through one cursor per leaf column, a page at a time.
import Foundation
import Support

public final class ParquetRows {
    /// One row: its 1-based number in the file, and its object, or why it cannot be read (a value that is not
    /// UTF-8, named by column and page), for the caller to refuse or skip.
    public struct Row {
        public let number: Int
        public let object: [String: Any]
        public let problem: String?
    }

    public let file: ParquetFile
    private let fields: [(name: String, shape: FieldShape)]
    private var groups: Range<Int>
    private var cursors: [[ColumnCursor]] = []
    private var rowsLeftInGroup = 0
    private var nextRow = 0

    /// Reads `fields` (those the file has; the others are absent from every row) of row groups `groups`.
    public init(file: ParquetFile, fields: [String], groups: Range<Int>) throws {
        self.file = file
        self.fields = try fields.filter(file.fieldNames.contains).map { ($0, try file.field($0)) }
        self.groups = groups
        nextRow = groups.isEmpty ? 0 : file.firstRow(ofGroup: groups.lowerBound)
    }

    public func next() throws -> Row? {
        while rowsLeftInGroup == 0 {
            guard let g = groups.popFirst() else { return nil }
            cursors = try fields.map { field in
                try field.shape.leaves.map { try ColumnCursor(file: file, group: g, leaf: $0) }
            }
            rowsLeftInGroup = Int(file.metadata.rowGroups[g].rowCount)
        }
        rowsLeftInGroup -= 1
        nextRow += 1
        var object: [String: Any] = [:]
        var problem: String?
        for (f, field) in fields.enumerated() {
            let columns = cursors[f]
            func value(_ entry: ColumnEntry, _ cursor: ColumnCursor) -> Any? {
                guard let v = entry.value else { return nil }
                switch v {
                case let .bytes(bytes):
                    guard let text = String(validating: bytes, as: UTF8.self) else {
                        let at = TextLines.firstInvalidByte(bytes).map { $0 + 1 } ?? 0
                        problem = problem ?? "\(cursor.place), row \(nextRow): not valid UTF-8 at byte \(at)"
                        return nil
                    }
                    return text
                case let .int(i): return Int(i)
                case let .double(d): return d
                case let .bool(b): return b
                }
            }
            switch field.shape {
            case .value:
                let entry = try entries(of: columns[0])[0]
                if let v = value(entry, columns[0]) { object[field.name] = v }
            case let .list(present, nonEmpty, elementPresent, element):
                let lists = try columns.map { try entries(of: $0) }
                guard lists.allSatisfy({ $0.count == lists[0].count }) else {
                    throw DatasetError.invalid(
                        "\(columns[0].place), row \(nextRow): the columns of '\(field.name)' disagree on the list's length; the file is damaged"
                    )
                }
                let first = lists[0][0].definition
                if first < present { continue }
                if first < nonEmpty {
                    object[field.name] = [Any]()
                    continue
                }
                var items: [Any] = []
                for i in lists[0].indices {
                    guard lists[0][i].definition >= elementPresent else {
                        items.append(NSNull())
                        continue
                    }
                    switch element {
                    case .value: items.append(value(lists[0][i], columns[0]) ?? NSNull())
                    case let .structure(members):
                        var item: [String: Any] = [:]
                        for (m, member) in members.enumerated() {
                            if let v = value(lists[m][i], columns[m]) { item[member.name] = v }
                        }
                        items.append(item)
                    }
                }
                object[field.name] = items
            }
        }
        return Row(number: nextRow, object: object, problem: problem)
    }

    /// The entries of the current row in one column: the first (repetition 0), then those that repeat it.
    private func entries(of cursor: ColumnCursor) throws -> [ColumnEntry] {
        guard let first = try cursor.next(), first.repetition == 0 else {
            throw DatasetError.invalid(
                "\(cursor.place), row \(nextRow): the column ends before the row group's last row; the file is damaged")
        }
        var out = [first]
        while let r = try cursor.peekRepetition(), r > 0 { out.append(try cursor.next()!) }
        return out
    }
}
