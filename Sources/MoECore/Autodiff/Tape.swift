/// Reverse-mode automatic differentiation over whole tensors. Each op records its output and a
/// closure that, given the output's gradient, adds its inputs' gradients; `backward` replays the
/// closures newest first. Ops are coarse (a matrix product, an attention pass), so the tape costs
/// nothing next to the maths it records.
public final class Tape {
    final class Node {
        var value: Tensor
        var gradient: Tensor?
        let backward: ((Tensor, Tape) -> Void)?
        init(value: Tensor, backward: ((Tensor, Tape) -> Void)?) {
            self.value = value
            self.backward = backward
        }
    }

    var nodes: [Node] = []
    /// Cores its large products and attention may use. Results do not depend on it.
    public let threads: Int

    public init(threads: Int = Kernels.threads) { self.threads = max(1, threads) }

    /// A tensor entering the computation (a parameter or an input).
    public func leaf(_ value: Tensor) -> Variable {
        nodes.append(Node(value: value, backward: nil))
        return Variable(id: nodes.count - 1)
    }

    func record(_ value: Tensor, backward: @escaping (Tensor, Tape) -> Void) -> Variable {
        nodes.append(Node(value: value, backward: backward))
        return Variable(id: nodes.count - 1)
    }

    public func value(_ v: Variable) -> Tensor { nodes[v.id].value }

    /// ∂loss/∂v after `backward`; zeros if v did not influence the loss.
    public func gradient(_ v: Variable) -> Tensor { nodes[v.id].gradient ?? Tensor(zeros: nodes[v.id].value.shape) }

    func accumulate(_ v: Variable, _ g: Tensor) {
        precondition(
            g.shape == nodes[v.id].value.shape || g.count == nodes[v.id].value.count,
            "gradient shape \(g.shape) for value \(nodes[v.id].value.shape)")
        if var existing = nodes[v.id].gradient {
            nodes[v.id].gradient = nil  // keep the buffer uniquely referenced while adding
            existing.scalars.withUnsafeMutableBufferPointer { e in
                g.scalars.withUnsafeBufferPointer { Kernels.axpy(1, $0.baseAddress!, e.baseAddress!, count: e.count) }
            }
            nodes[v.id].gradient = existing
        } else {
            nodes[v.id].gradient = Tensor(shape: nodes[v.id].value.shape, scalars: g.scalars)
        }
    }

    /// Back-propagates from a scalar `loss` (seeded with 1).
    public func backward(from loss: Variable) {
        precondition(nodes[loss.id].value.count == 1, "backward needs a scalar loss")
        nodes[loss.id].gradient = Tensor(repeating: 1, shape: nodes[loss.id].value.shape)
        for id in stride(from: loss.id, through: 0, by: -1) {
            guard let backward = nodes[id].backward, let g = nodes[id].gradient else { continue }
            backward(g, self)
        }
    }
}

/// A handle to a value on a `Tape`.
public struct Variable: Hashable, Sendable {
    public let id: Int
}
