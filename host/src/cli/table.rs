//! Plain-text tables for the client commands: columns padded to their
//! widest cell, two spaces apart. No borders, so the output greps and cuts.

/// Renders `header` and `rows` (each as long as `header`), one line each.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec!["fraud".to_owned(), "running".to_owned()],
            vec!["a".to_owned(), "stopped".to_owned()],
        ];
        assert_eq!(
            render(&["name", "state"], &rows),
            "name   state\nfraud  running\na      stopped\n"
        );
    }

    #[test]
    fn no_rows_still_prints_the_header() {
        assert_eq!(render(&["digest", "name"], &[]), "digest  name\n");
    }
}
