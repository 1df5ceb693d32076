// ncursesw for Swift. The wide-character API needs these macros before the header (SwiftPM
// drops pkg-config's cflags), and macros/globals that Swift cannot import are wrapped below.
#ifndef MOESCOPE_NCURSES_SHIM_H
#define MOESCOPE_NCURSES_SHIM_H
#define _XOPEN_SOURCE_EXTENDED 1
#define NCURSES_WIDECHAR 1
#include <locale.h>
#include <wchar.h>
#include <ncursesw/curses.h>
#include <langinfo.h>
#include <stdio.h>

static inline WINDOW *moescope_stdscr(void) { return stdscr; }
static inline int moescope_lines(void) { return LINES; }
static inline int moescope_cols(void) { return COLS; }
static inline int moescope_colors(void) { return COLORS; }
static inline int moescope_color_pairs(void) { return COLOR_PAIRS; }
static inline attr_t moescope_a_bold(void) { return A_BOLD; }
static inline attr_t moescope_a_reverse(void) { return A_REVERSE; }
static inline attr_t moescope_a_underline(void) { return A_UNDERLINE; }
static inline attr_t moescope_a_dim(void) { return A_DIM; }
static inline attr_t moescope_a_normal(void) { return A_NORMAL; }
static inline int moescope_key_code_yes(void) { return KEY_CODE_YES; }
/* Curses on the standard streams; NULL (instead of initscr's exit) when TERM is unknown. */
static inline SCREEN *moescope_newterm(void) { return newterm(NULL, stdout, stdin); }
/* Control sequences curses does not know (bracketed paste), straight to the terminal. */
static inline void moescope_write_raw(const char *text) { fputs(text, stdout); fflush(stdout); }
/* The locale's character set after setlocale ("UTF-8", "ANSI_X3.4-1968", ...). */
static inline const char *moescope_codeset(void) { return nl_langinfo(CODESET); }
#endif
