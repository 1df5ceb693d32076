/// How the expert axis of a heatmap or histogram fits a panel's width: numeric cells where they
/// fit, else one column per expert, else several experts per column (the maximum shown), and
/// beyond that a window that pans to keep the expert cursor in view. Experts run in display
/// order (by id, by load, or by probability); in id order a model's expert groups are
/// separated by a one-column rule.
struct ExpertAxis {
    /// One drawn column (or numeric cell) and the experts it stands for.
    struct Column {
        var x: Int
        var experts: ArraySlice<Int>
    }

    let isNumeric: Bool
    /// Columns a numeric cell or an expert column takes.
    let cellWidth: Int
    /// Experts summarised by one column (1 when each has its own).
    let expertsPerColumn: Int
    let columns: [Column]
    /// x of each group separator drawn.
    let separators: [Int]
    /// Experts left of and right of the window.
    let hiddenBefore: Int
    let hiddenAfter: Int
    /// Columns used.
    let width: Int

    /// - Parameters:
    ///   - order: every expert id once, in display order.
    ///   - groupSize: experts per group where separators apply (id order of a grouped model).
    ///   - numericWidth: columns of one numeric cell.
    init(order: [Int], groupSize: Int?, width available: Int, zoom: ExpertZoom, cursor: Int, numericWidth: Int = 5) {
        let count = order.count
        let groups = groupSize.flatMap { $0 > 0 && $0 < count && count % $0 == 0 ? count / $0 : nil } ?? 1
        let size = count / groups
        func layout(per: Int, cell: Int) -> (units: [(cell: Int, experts: ArraySlice<Int>?)], width: Int) {
            var units: [(cell: Int, experts: ArraySlice<Int>?)] = []
            var width = 0
            for g in 0..<groups {
                if g > 0 {
                    units.append((1, nil))
                    width += 1
                }
                var start = g * size
                while start < (g + 1) * size {
                    let end = min((g + 1) * size, start + per)
                    units.append((cell, order[start..<end]))
                    width += cell
                    start = end
                }
            }
            return (units, width)
        }
        var numeric = zoom == .numeric
        var per = 1
        if zoom == .fit {
            if layout(per: 1, cell: numericWidth).width <= available {
                numeric = true
            } else {
                while per < size, layout(per: per, cell: 1).width > available { per += 1 }
            }
        }
        let cell = numeric ? numericWidth : 1
        let (units, total) = layout(per: per, cell: cell)
        // The window: all units if they fit, else the run around the cursor's unit.
        var first = 0
        var last = units.count - 1
        if total > available {
            let target = units.firstIndex { $0.experts?.contains(cursor) == true } ?? 0
            first = target
            last = target
            var used = units[target].cell
            var grew = true
            while grew {
                grew = false
                if last + 1 < units.count, used + units[last + 1].cell <= available,
                    last - target <= target - first || first == 0
                {
                    last += 1
                    used += units[last].cell
                    grew = true
                } else if first > 0, used + units[first - 1].cell <= available {
                    first -= 1
                    used += units[first].cell
                    grew = true
                } else if last + 1 < units.count, used + units[last + 1].cell <= available {
                    last += 1
                    used += units[last].cell
                    grew = true
                }
            }
        }
        var columns: [Column] = []
        var separators: [Int] = []
        var x = 0
        var before = 0
        var after = 0
        for (i, unit) in units.enumerated() {
            if i < first {
                before += unit.experts?.count ?? 0
                continue
            }
            if i > last {
                after += unit.experts?.count ?? 0
                continue
            }
            if let experts = unit.experts { columns.append(Column(x: x, experts: experts)) } else { separators.append(x) }
            x += unit.cell
        }
        isNumeric = numeric
        cellWidth = cell
        expertsPerColumn = per
        self.columns = columns
        self.separators = separators
        hiddenBefore = before
        hiddenAfter = after
        width = x
    }
}

/// The rows of a long list that fit, keeping `selected` in view (centred where possible).
struct ListWindow {
    let first: Int
    let count: Int
    let total: Int

    init(total: Int, visible: Int, selected: Int) {
        let shown = max(0, min(total, visible))
        self.total = total
        count = shown
        first = max(0, min(selected - shown / 2, total - shown))
    }

    var range: Range<Int> { first..<first + count }
    var hiddenAbove: Int { first }
    var hiddenBelow: Int { total - first - count }
}

/// How far the expert axis is zoomed: fit every expert (numeric if they fit, else summarised
/// columns), one column per expert, or numeric cells; the last two pan with the cursor.
public enum ExpertZoom: Int, CaseIterable, Sendable {
    case fit, columns, numeric

    public var name: String {
        switch self {
        case .fit: "fit"
        case .columns: "1 column/expert"
        case .numeric: "numbers"
        }
    }
}

/// The order of the expert axis.
public enum ExpertOrder: CaseIterable, Sendable {
    case id, load, probability

    public var name: String {
        switch self {
        case .id: "by id"
        case .load: "by load"
        case .probability: "by this token's probability"
        }
    }
}
