// Reads an ONNX TensorProto (the self-check data's input_<i>.pb / output_<i>.pb) without a
// protobuf library: the fields the toolkit writes (dims, data_type, name, raw_data, and the typed
// float_data / int64_data a producer may use instead of raw_data).

const FLOAT = 1;
const INT64 = 7;

function varint(bytes, at) {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    if (at.i >= bytes.length) throw new Error("a truncated TensorProto");
    const byte = bytes[at.i++];
    value |= BigInt(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return value;
    shift += 7n;
  }
}

function packedOrOne(bytes, at, wire, read) {
  if (wire !== 2) return [read(bytes, at)];
  const end = at.i + Number(varint(bytes, at));
  const values = [];
  while (at.i < end) values.push(read(bytes, at));
  return values;
}

export function parseTensor(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = { i: 0 };
  const tensor = { dims: [], dataType: 0, name: "", raw: null, floats: [], int64s: [] };
  while (at.i < bytes.length) {
    const key = Number(varint(bytes, at));
    const field = key >> 3;
    const wire = key & 7;
    if (field === 1) tensor.dims.push(...packedOrOne(bytes, at, wire, varint).map(Number));
    else if (field === 2) tensor.dataType = Number(varint(bytes, at));
    else if (field === 4) {
      const read = (b, p) => {
        const value = view.getFloat32(p.i, true);
        p.i += 4;
        return value;
      };
      tensor.floats.push(...packedOrOne(bytes, at, wire === 5 ? 5 : wire, read));
    } else if (field === 7) tensor.int64s.push(...packedOrOne(bytes, at, wire, varint));
    else if (field === 8 || field === 9) {
      const length = Number(varint(bytes, at));
      const chunk = bytes.slice(at.i, at.i + length);
      at.i += length;
      if (field === 8) tensor.name = new TextDecoder().decode(chunk);
      else tensor.raw = chunk;
    } else if (wire === 0) varint(bytes, at);
    else if (wire === 1) at.i += 8;
    else if (wire === 2) at.i += Number(varint(bytes, at));
    else if (wire === 5) at.i += 4;
    else throw new Error(`a TensorProto field of wire type ${wire}`);
  }
  const count = tensor.dims.reduce((a, b) => a * b, 1);
  let data;
  if (tensor.dataType === FLOAT) {
    data = tensor.raw ? new Float32Array(tensor.raw.buffer, tensor.raw.byteOffset, count) : Float32Array.from(tensor.floats);
    return { name: tensor.name, type: "float32", dims: tensor.dims, data: Float32Array.from(data) };
  }
  if (tensor.dataType === INT64) {
    data = tensor.raw ? new BigInt64Array(tensor.raw.slice().buffer, 0, count) : BigInt64Array.from(tensor.int64s);
    return { name: tensor.name, type: "int64", dims: tensor.dims, data: BigInt64Array.from(data) };
  }
  throw new Error(`tensor '${tensor.name}' has data type ${tensor.dataType}: only float32 and int64 are read`);
}
