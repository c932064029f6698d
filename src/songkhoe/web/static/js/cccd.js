// Citizen ID (CCCD) checks while typing — the same rules as songkhoe/web/citizen_id.py, whose
// verdict is the one that counts: 12 digits = province of birth registration (63 pre-2025
// codes), century/sex digit (1900s 0/1, 2000s 2/3, 2100s 4/5: male/female), 2-digit birth
// year, 6 serial digits (Decree 137/2015/NĐ-CP art. 13; Circular 07/2016/TT-BCA).
const PROVINCES = new Set([1, 2, 4, 6, 8, 10, 11, 12, 14, 15, 17, 19, 20, 22, 24, 25, 26, 27, 30, 31,
  33, 34, 35, 36, 37, 38, 40, 42, 44, 45, 46, 48, 49, 51, 52, 54, 56, 58, 60, 62, 64, 66, 67, 68, 70,
  72, 74, 75, 77, 79, 80, 82, 83, 84, 86, 87, 89, 91, 92, 93, 94, 95, 96]);

// → [code, vars] for each broken rule: format | province | century | birth-year | sex
export function problems(number, birthYear, gender) {
  if (!/^\d{12}$/.test(number)) return [['format', {}]];
  const out = [];
  if (!PROVINCES.has(Number(number.slice(0, 3)))) out.push(['province', { code: number.slice(0, 3) }]);
  const digit = Number(number[3]);
  if (digit > 5) return [...out, ['century', { digit }]];
  const year = 1900 + 100 * Math.floor(digit / 2) + Number(number.slice(4, 6));
  const male = digit % 2 === 0;
  if (birthYear && year !== birthYear) out.push(['birth-year', { year, given: birthYear }]);
  if ((gender === 'male' || gender === 'female') && male !== (gender === 'male')) out.push(['sex', { sex: male ? 'male' : 'female' }]);
  return out;
}
