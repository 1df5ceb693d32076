/// A share as a whole percentage ("83%"), "nan" when undefined.
enum DiffPercent {
    static func text(_ share: Double) -> String { share.isFinite ? "\(Int((share * 100).rounded()))%" : "nan" }
}
